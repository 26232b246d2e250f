from seallm.cli import main

main()
