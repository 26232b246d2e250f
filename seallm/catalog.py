"""Built-in model and device specifications.

Model shapes are those of the public Hugging Face configs of each family. Device figures are
vendor datasheet numbers (dense bf16 FLOP/s, HBM bandwidth, NVLink per direction, NIC and
PCIe per direction); the cost model's calibrated efficiency factors turn them into achieved
rates.
"""

from __future__ import annotations

from seallm.specs import DeviceSpec, GiB, ModelSpec

MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        ModelSpec("llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000, 6.74e9, max_context=4096),
        ModelSpec("llama-2-13b", 40, 5120, 40, 40, 128, 13824, 32000, 13.0e9, max_context=4096),
        ModelSpec("llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000, 68.98e9, max_context=4096),
        ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 8.03e9, max_context=8192),
        ModelSpec("llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256, 70.55e9, max_context=8192),
        ModelSpec("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32000, 7.24e9, max_context=8192),
        ModelSpec("codellama-34b", 48, 8192, 64, 8, 128, 22016, 32000, 33.74e9, max_context=16384),
        ModelSpec("smollm2-135m", 30, 576, 9, 3, 64, 1536, 49152, 134.5e6, max_context=8192),
        ModelSpec("gemma-3-270m", 18, 640, 4, 1, 256, 2048, 262144, 268.1e6, max_context=32768),
        # Today's dense models, from the config.json of the Hugging Face id beside each;
        # num_params counted from those shapes (untied embeddings unless noted).
        # meta-llama/Llama-3.1-8B-Instruct, -70B-Instruct: rope_scaling llama3, 128k context.
        ModelSpec("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, 8.03e9, max_context=131072),
        ModelSpec(
            "llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256, 70.55e9, max_context=131072
        ),
        # meta-llama/Llama-3.2-3B-Instruct (tied embeddings).
        ModelSpec("llama-3.2-3b", 28, 3072, 24, 8, 128, 8192, 128256, 3.21e9, max_context=131072),
        # Qwen/Qwen2.5-{7,14,32,72}B-Instruct: 32k native context (max_position_embeddings);
        # 128k only with YaRN rope_scaling added to the config, which the cards describe as
        # optional (and which seallm's engine refuses), so 32768 here.
        ModelSpec("qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, 7.62e9, max_context=32768),
        ModelSpec("qwen2.5-14b", 48, 5120, 40, 8, 128, 13824, 152064, 14.77e9, max_context=32768),
        ModelSpec("qwen2.5-32b", 64, 5120, 40, 8, 128, 27648, 152064, 32.76e9, max_context=32768),
        ModelSpec("qwen2.5-72b", 80, 8192, 64, 8, 128, 29568, 152064, 72.71e9, max_context=32768),
        # Qwen/Qwen3-8B, Qwen/Qwen3-32B: head_dim 128 (heads x head_dim != hidden in 32B);
        # 32k native context (the config's 40960 leaves room for outputs; 128k with YaRN).
        ModelSpec("qwen3-8b", 36, 4096, 32, 8, 128, 12288, 151936, 8.19e9, max_context=32768),
        ModelSpec("qwen3-32b", 64, 5120, 64, 8, 128, 25600, 151936, 32.76e9, max_context=32768),
        # mistralai/Mistral-7B-Instruct-v0.3 (sliding_window null), and
        # mistralai/Mistral-Small-24B-Instruct-2501.
        ModelSpec("mistral-7b-v0.3", 32, 4096, 32, 8, 128, 14336, 32768, 7.25e9, max_context=32768),
        ModelSpec(
            "mistral-small-24b", 40, 5120, 32, 8, 128, 32768, 131072, 23.57e9, max_context=32768
        ),
    ]
}

DEVICES: dict[str, DeviceSpec] = {
    d.name: d
    for d in [
        # A100 SXM 80GB: 312 TFLOP/s bf16, 2.039 TB/s HBM2e, NVLink3 600 GB/s bidirectional,
        # 200 Gb/s InfiniBand per GPU, PCIe 4.0 x16.
        DeviceSpec("a100-80gb", 80 * GiB, 312e12, 2.039e12, 300e9, 25e9, 25e9),
        # H100 SXM 80GB: 989 TFLOP/s bf16 dense, 3.35 TB/s HBM3, NVLink4 900 GB/s
        # bidirectional, 400 Gb/s InfiniBand per GPU, PCIe 5.0 x16.
        DeviceSpec("h100-80gb", 80 * GiB, 989e12, 3.35e12, 450e9, 50e9, 50e9),
        # A small CPU host standing in for one device (cpu-duo). Rough figures for two cores;
        # `seallm profile` replaces them with measurements.
        DeviceSpec("cpu", 8 * GiB, 1e11, 1.5e10, 1e10, 1e9, 1e10),
    ]
}
