"""The 20 WLASL20c glosses in the models' output order (model/labels.json says the same; a test checks)."""

GLOSSES: tuple[str, ...] = (
    "book", "chair", "clothes", "computer", "drink", "drum", "family", "football", "go", "hat",
    "hello", "kiss", "like", "play", "school", "street", "table", "university", "violin", "wall",
)  # fmt: skip
