"""Regenerate the VideoScore2 golden data with the authors' own reading code (TIGER-AI-Lab/VideoScore2, see
../README.md).

``vs2_inference.py``'s ``main`` generates with ``output_scores=True``, decodes the answer, reads the three integers
with its pattern, finds the step that wrote each score digit (``find_score_token_index_by_prompt``) and weights the
digit by its probability among 1-5 at that step (``ll_based_soft_score_normed``). This script parses the pinned
file (hash checked), executes its two reading functions and the statements of ``main`` from the score pattern to the
three soft scores, unchanged, on canned answers and step scores (cases.py) in place of the model's: everything after
``model.generate`` is the reference's code. Only the tokenizer is needed beside torch and numpy::

    VIDEOSCORE2_DIR=/path/to/VideoScore2 python tests/golden/videoscore2/make_golden.py
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
COMMIT = "e6abe26bf694c293023cb3863bd6c657128766ac"
PATH = "vs2_inference.py"
SHA256 = "de501317a64d4752cbc995da86dcf5be294715d138ce212bcbaf20c5167149fe"
SEED = 7
sys.path.insert(0, str(HERE))

from cases import CASES, step_scores, tokenizer, tokens  # noqa: E402


def reference_reader(source: str):
    """The reference's two functions and main's reading statements, compiled from the parsed file."""
    module = ast.parse(source)
    functions = [
        n
        for n in module.body
        if isinstance(n, ast.FunctionDef)
        and n.name in {"ll_based_soft_score_normed", "find_score_token_index_by_prompt"}
    ]
    main = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    names = [getattr(s.targets[0], "id", None) if isinstance(s, ast.Assign) else None for s in main.body]
    start, stop = names.index("pattern"), names.index("p_soft")
    reading = main.body[start : stop + 1]
    namespace = {"re": re, "torch": torch, "np": np}
    exec(compile(ast.Module(body=functions, type_ignores=[]), PATH, "exec"), namespace)  # noqa: S102
    code = compile(ast.Module(body=reading, type_ignores=[]), PATH, "exec")
    return namespace, code


def main() -> None:
    source_path = Path(os.environ["VIDEOSCORE2_DIR"]) / PATH
    data = source_path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == SHA256, f"{source_path} is not {PATH} at {COMMIT}"
    namespace, code = reference_reader(data.decode("utf-8"))
    tok = tokenizer()
    golden = {}
    for n, name in enumerate(CASES):
        ids = tokens(tok, name)
        scores = tuple(row.unsqueeze(0) for row in step_scores(tok, name, SEED + n))  # generate's (1, vocab) steps
        sequences = torch.tensor([ids])
        scope = dict(namespace)
        scope.update(
            gen_token_ids=ids,
            scores=scores,
            tokenizer=tok,
            # main decodes the new tokens with processor.batch_decode, which is the tokenizer's
            output_text=tok.batch_decode(sequences, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0],
        )
        exec(code, scope)  # noqa: S102
        golden[name] = {
            "seed": SEED + n,
            "hard": [scope["v_score"], scope["t_score"], scope["p_score"]],
            "steps": [scope["idx_v"], scope["idx_t"], scope["idx_p"]],
            "soft": [scope["v_soft"], scope["t_soft"], scope["p_soft"]],
        }
    (HERE / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(json.dumps(golden, indent=1))


if __name__ == "__main__":
    main()
