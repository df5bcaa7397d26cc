"""Golden cases for glide-tokenizer's CLIP BPE: token ids from CLIP's own `simple_tokenizer.py`
(the clip-anytorch 2.6.0 wheel from PyPI, MIT; identical to glide-text2im's copy), written to
crates/glide-tokenizer/tests/clip_cases.json. Needs `pip install ftfy regex`.
    python3 scripts/clip-tokenizer-cases.py
"""
import importlib.util
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

tmp = Path(tempfile.mkdtemp())
subprocess.run([sys.executable, "-m", "pip", "download", "clip-anytorch==2.6.0", "--no-deps",
                "-q", "-d", str(tmp)], check=True)
wheel = next(tmp.glob("clip_anytorch-*.whl"))
zipfile.ZipFile(wheel).extractall(tmp / "whl")
spec = importlib.util.spec_from_file_location("simple_tokenizer", tmp / "whl/clip/simple_tokenizer.py")
st = importlib.util.module_from_spec(spec)
spec.loader.exec_module(st)
tok = st.SimpleTokenizer()

texts = [
    "a red apple",
    "A Red Apple, glossy 3D render!",
    "a corgi wearing a red bowtie and a purple party hat",
    "an oil painting of a corgi",
    "grinning face with big eyes",
    "   lots   of\tspace\n\nand lines  ",
    "it's what we'll do; they've said I'm done, you'd see",
    "numbers 12345 and 3.14159 and 1,000,000",
    "fish &amp; chips &lt;3 &#39;quoted&#39; &amp;amp;",
    "ünïcödé 🦊 ∑ café naïve",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "<|startoftext|> inside <|endoftext|>",
    "",
    "a " * 100,
    "emoji 😀😃😄 and kanji 漢字 and Ελληνικά",
    "hyphen-ated words, slashes/and/more... (parentheses) [brackets] {braces}",
]
cases = []
for t in texts:
    ids = tok.encode(t)
    # glide_text2im/tokenizer/simple_tokenizer.py's `padded_tokens_and_len(tokens, 77)`.
    full = [tok.encoder["<|startoftext|>"]] + ids[: 77 - 2] + [tok.encoder["<|endoftext|>"]]
    padded, n = full + [0] * (77 - len(full)), len(full)
    cases.append({"text": t, "ids": ids, "padded_77": padded, "len_77": n})
out = Path(__file__).resolve().parent.parent / "crates/glide-tokenizer/tests/clip_cases.json"
out.write_text(json.dumps({"start_token": tok.encoder["<|startoftext|>"], "end_token": tok.encoder["<|endoftext|>"],
                           "n_vocab": len(tok.encoder), "cases": cases}, ensure_ascii=False, indent=1) + "\n")
print(f"wrote {len(cases)} cases to {out}")
