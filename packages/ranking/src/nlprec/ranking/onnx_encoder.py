"""The bi-encoder on ONNX Runtime (CPU), in float32 or dynamically quantised to int8.

sentence-transformers' own ONNX backend needs ``optimum``, which is not installed here, so the
export is done directly:

1. ``torch.onnx.export`` (TorchScript exporter, eager attention) of the transformer, inputs
   ``input_ids``, ``attention_mask``, ``token_type_ids`` with dynamic batch and length axes,
   output the last hidden state;
2. ONNX Runtime's transformer optimiser fuses embeddings + LayerNorm, attention, bias + GELU and
   skip + LayerNorm; with ``gelu="tanh"`` GELU becomes its tanh approximation (FastGelu,
   ``0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))``, within ~1e-3 of the erf form), cheaper on CPU;
3. for int8, ``quantize_dynamic`` with **per-channel** int8 weights. Per-tensor weights lost too
   much on this AVX2 machine (cosine to the float32 embedding as low as 0.65-0.90 on SciFact
   abstracts, against >= 0.989 per channel).

Pooling (mean, CLS or max, from the model's ``1_Pooling/config.json``) and normalisation run in
NumPy. Exports are cached under ``$NLPREC_HOME/.nlprec/onnx/<sha256 of the weights>-<variant>/``
and written atomically (a temporary folder renamed into place).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from nlprec.core.hashing import hash_files
from nlprec.core.io import atomic_directory

ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class OnnxExportError(RuntimeError):
    """The model could not be exported to or run with ONNX Runtime."""


def _transformer_dir(model_dir: Path) -> Path:
    """The folder of the sentence-transformers Transformer module (the root for MiniLM)."""
    modules = model_dir / "modules.json"
    if modules.exists():
        for module in json.loads(modules.read_text()):
            if module["type"].endswith("Transformer"):
                return model_dir / module["path"]
    return model_dir


def pooling_mode(model_dir: Path) -> str:
    """``mean``, ``cls`` or ``max`` from the Pooling module's config (mean when there is none)."""
    modules = model_dir / "modules.json"
    if not modules.exists():
        return "mean"
    for module in json.loads(modules.read_text()):
        if module["type"].endswith("Pooling"):
            config = json.loads((model_dir / module["path"] / "config.json").read_text())
            if config.get("pooling_mode") in ("mean", "cls", "max"):  # sentence-transformers 6
                return config["pooling_mode"]
            for mode in ("mean", "cls", "max"):  # earlier: one boolean per mode
                if config.get(f"pooling_mode_{mode}_tokens") or config.get(
                    f"pooling_mode_{mode}_token"
                ):
                    return mode
            raise OnnxExportError(f"{model_dir}: unsupported pooling {config} for the ONNX backend")
    return "mean"


def saved_prompts(model_dir: Path) -> dict[str, str]:
    """The prompts a sentence-transformers model was saved with (config_sentence_transformers.json)."""
    config = model_dir / "config_sentence_transformers.json"
    return json.loads(config.read_text()).get("prompts") or {} if config.exists() else {}


def weights_digest(model_dir: Path) -> str:
    """Fingerprint of every weight file in full: the export cache must never serve another model's
    graph (the index fingerprint hashes only the first MiB, where fine-tuning changes little)."""
    transformer = _transformer_dir(model_dir)
    weights = sorted(transformer.glob("*.safetensors")) + sorted(transformer.glob("*.bin"))
    if not weights:
        raise OnnxExportError(f"{transformer}: no *.safetensors or *.bin weights to export")
    return hash_files([(p.name, p) for p in weights], length=20)


def _export_float(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(source), dtype=torch.float32, attn_implementation="eager")
    model.eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            out = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    sample = AutoTokenizer.from_pretrained(str(source))(
        ["an example", "a second, longer example"], padding=True, return_tensors="pt"
    )
    axes = {name: {0: "batch", 1: "tokens"} for name in (*ONNX_INPUTS, "last_hidden_state")}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            LastHidden(model), tuple(sample[name] for name in ONNX_INPUTS), str(target),
            dynamo=False, input_names=list(ONNX_INPUTS), output_names=["last_hidden_state"],
            dynamic_axes=axes, opset_version=17,
        )  # fmt: skip


GELU_FORMS = ("exact", "tanh")


def _optimise(source: Path, target: Path, transformer_dir: Path, gelu: str = "exact") -> None:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    config = json.loads((transformer_dir / "config.json").read_text())
    options = FusionOptions("bert")
    options.enable_gelu_approximation = gelu == "tanh"
    optimised = optimize_model(
        str(source),
        model_type="bert",
        num_heads=config.get("num_attention_heads", 0),
        hidden_size=config.get("hidden_size", 0),
        opt_level=1,
        optimization_options=options,
    )
    optimised.save_model_to_file(str(target))


def _quantise(source: Path, target: Path) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )  # fmt: skip


def export_onnx(
    model_dir: str | Path,
    int8: bool = False,
    cache_dir: str | Path | None = None,
    gelu: str = "exact",
) -> Path:
    """The path of the ONNX model for ``model_dir`` (exported once, then read from the cache)."""
    from nlprec.core.paths import nlprec_home

    if gelu not in GELU_FORMS:
        raise ValueError(f"gelu must be one of {GELU_FORMS}, not {gelu!r}")
    model_dir = Path(model_dir)
    root = Path(cache_dir) if cache_dir is not None else nlprec_home() / ".nlprec" / "onnx"
    variant = ("int8" if int8 else "fp32") + ("-tanhgelu" if gelu == "tanh" else "")
    folder = root / f"{weights_digest(model_dir)}-{variant}"
    if (folder / "model.onnx").exists():
        return folder / "model.onnx"
    float_model = export_onnx(model_dir, False, root, gelu) if int8 else None  # int8 starts from it
    try:
        with atomic_directory(folder, replace=False) as work:  # another process may finish first
            if float_model is not None:
                _quantise(float_model, work / "model.onnx")
            else:
                transformer = _transformer_dir(model_dir)
                _export_float(transformer, work / "raw.onnx")
                _optimise(work / "raw.onnx", work / "model.onnx", transformer, gelu)
                (work / "raw.onnx").unlink()
    except Exception as err:
        raise OnnxExportError(f"exporting {model_dir} to ONNX failed: {err}") from err
    return folder / "model.onnx"


UNSET_TOKENIZER_LENGTH = 10**6  # tokenizers without a limit report a huge model_max_length


def default_length(transformer: Path, tokenizer) -> int:
    """The model's maximum sequence length: ``max_seq_length`` of sentence_bert_config.json
    (sentence-transformers < 6), else the tokenizer's ``model_max_length`` (where
    sentence-transformers 6 saves it), else 512."""
    bert_config = transformer / "sentence_bert_config.json"
    if bert_config.exists():
        length = json.loads(bert_config.read_text()).get("max_seq_length")
        if length:
            return int(length)
    length = getattr(tokenizer, "model_max_length", None)
    return int(length) if length and length < UNSET_TOKENIZER_LENGTH else 512


class OnnxEncoder:
    """What nlprec's encoding needs of a SentenceTransformer (``encode_query``,
    ``encode_document`` with the saved prompts, ``tokenizer``, ``max_seq_length``), on an ONNX
    Runtime CPU session."""

    def __init__(
        self,
        model_dir: str | Path,
        max_seq_length: int | None = None,
        int8: bool = False,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
        gelu: str = "exact",
    ) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        model_dir = Path(model_dir)
        transformer = _transformer_dir(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(transformer))
        self.max_seq_length = max_seq_length or default_length(transformer, self.tokenizer)
        self.pooling = pooling_mode(model_dir)
        self.prompts = saved_prompts(model_dir)
        self.int8 = int8
        self.path = export_onnx(model_dir, int8, cache_dir, gelu)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: ONNX Runtime's default (physical cores)
        self.session = ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"]
        )
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self._inputs = {i.name for i in self.session.get_inputs()}

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def embed(self, encoding) -> np.ndarray:
        """(batch, dim) pooled, not yet normalised, from a tokenizer output (NumPy or torch)."""
        feeds = {
            name: np.asarray(encoding[name], dtype=np.int64)
            for name in ONNX_INPUTS
            if name in self._inputs
        }
        if "token_type_ids" in self._inputs and "token_type_ids" not in encoding:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        hidden = self.session.run(None, feeds)[0]  # (batch, tokens, dim)
        mask = feeds["attention_mask"][..., None].astype(np.float32)  # (batch, tokens, 1)
        if self.pooling == "cls":
            return hidden[:, 0]
        if self.pooling == "max":
            return np.where(mask > 0, hidden, -np.inf).max(axis=1)
        return (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)

    def encode(self, texts: list[str], batch_size: int = 32, prompt: str | None = None,
               normalize_embeddings: bool = True, **_ignored) -> np.ndarray:  # fmt: skip
        """SentenceTransformer.encode's shape of call: (n, dim) vectors, texts sorted by length so
        batches pad little."""
        texts = [f"{prompt}{t}" for t in texts] if prompt else list(texts)
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            encoding = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                      max_length=self.max_seq_length, return_tensors="np")  # fmt: skip
            vectors[rows] = self.embed(dict(encoding))
        if normalize_embeddings:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def encode_query(self, texts: list[str], batch_size: int = 32, **kwargs) -> np.ndarray:
        return self.encode(texts, batch_size, prompt=self.prompts.get("query"), **kwargs)

    def encode_document(self, texts: list[str], batch_size: int = 32, **kwargs) -> np.ndarray:
        return self.encode(texts, batch_size, prompt=self.prompts.get("document"), **kwargs)
