"""Canned EditReward-Bench groups and model scores for the metric golden (our own cases, the authors' JSON layout).

``GROUPS[k]`` are the records of the authors' ``EditReward_Bench_<k>pair.json`` files as ``evaluate_edit_reward_bench``
reads them (``prompt``, ``path_src``, ``paths_generated``, ``human_vote.ranking``); ``SCORES`` maps each candidate
path to the score a reward gave it. Scores are multiples of 1/64, exact in float32 and float64, so both
implementations see the same margins. The cases cover: K=2 ties written both ways the authors write them, equal
scores (numpy's order of ties decides the strict verdict), a zero margin on a decided pair (discordant without
ties), a tie threshold the K=2 grid picks above 0 by a strict maximum, reversed and partly swapped orders.
"""

GROUPS = {
    2: [
        ("g1", "A>B", (0.75, 0.25)),
        ("g2", "B>A", (0.5, 0.625)),
        ("g3", "A>B", (0.25, 0.5)),
        ("g4", "A=B=Good", (0.5, 0.5625)),
        ("g5", "A=B=Bad", (0.375, 0.125)),
        ("g6", "A>B", (0.5, 0.5)),
        ("g7", "A<B", (0.125, 0.875)),
        ("g8", "A>B", (0.5625, 0.5)),
        ("g9", "A=B=Good", (0.25, 0.3125)),
    ],
    3: [
        ("h1", "C>A>B", (0.5, 0.25, 0.75)),
        ("h2", "A>B>C", (0.5, 0.625, 0.125)),
        ("h3", "B>C>A", (0.25, 0.5, 0.25)),
        ("h4", "A>C>B", (0.875, 0.5, 0.625)),
    ],
    4: [
        ("i1", "D>B>A>C", (0.5, 0.625, 0.25, 0.75)),
        ("i2", "A>B>C>D", (0.25, 0.5, 0.625, 0.75)),
        ("i3", "B>A>D>C", (0.5, 0.75, 0.375, 0.25)),
    ],
}
LETTERS = "ABCD"


def candidate_path(k: int, group: str, index: int) -> str:
    return f"{k}pair/{group}/{LETTERS[index]}.png"


def records(k: int) -> list[dict]:
    """The authors' JSON records of subset ``k``."""
    return [
        {
            "prompt": f"edit {name}",
            "path_src": f"{k}pair/{name}/source.png",
            "paths_generated": [candidate_path(k, name, i) for i in range(len(scores))],
            "human_vote": {"ranking": ranking, "preference": ranking},
        }
        for name, ranking, scores in GROUPS[k]
    ]


SCORES = {
    candidate_path(k, name, i): score
    for k, groups in GROUPS.items()
    for name, _, scores in groups
    for i, score in enumerate(scores)
}
