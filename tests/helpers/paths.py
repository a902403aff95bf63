"""Where the tests find the repository's files and the shared data beside it."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS = REPO_ROOT / "models"
SHARED = REPO_ROOT.parent / "shared"  # absent on some machines: tests that need it skip
