"""Canned OCR readings of our own wording, in PaddleOCR's result layout: per case a prompt and the lines the
recognizer returned as ``(text, confidence)``; ``None`` stands for PaddleOCR's empty result (no text detected)."""

CASES = [
    ('a shop sign that says "Open Late" above the door', [("Open Late", 0.98)]),
    ('a shop sign that says "Open Late" above the door', [("OPEN", 0.9), ("late", 0.8)]),
    ('a mug printed with "Good Morning"', [("Breakfast at 8 Good morning everyone", 0.7)]),
    ('a mug printed with "Good Morning"', [("Good Mornin", 0.95)]),
    ('a mug printed with "Good Morning"', [("Goad Morning", 0.95)]),
    ('a mug printed with "Good Morning"', [("Good Mormning", 0.95)]),
    ('a poster reading "SALE 50%" in red', [("SALE 5O%", 0.6)]),
    ('a poster reading "SALE 50%" in red', [("completely unrelated words everywhere", 0.9)]),
    ('a poster reading "SALE 50%" in red', None),
    ('a poster reading "SALE 50%" in red', [("SALE", 0.0), ("50%", 0.9)]),
    ('a chalkboard with "Soup" and "Bread" written on it', [("Bread", 0.9)]),
    ('a chalkboard with "Soup" and "Bread" written on it', [("So up", 0.9)]),
    ('a street sign "ÉCOLE" in Paris', [("école", 0.9)]),
    ('a note with "to\tdo" scribbled', [("to do", 0.9)]),
    ('a banner "Happy Birthday Sam"', [("Sam", 0.9), ("Happy Birthday", 0.9)]),
    ('a neon sign "Bar"', [("B", 0.9)]),
    ('a neon sign "Bar"', [("rab", 0.9)]),
    ('a label "x"', [("", 0.9)]),
]
