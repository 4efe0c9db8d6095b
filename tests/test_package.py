import subprocess
import sys


def test_package_imports_without_torch() -> None:
    """The package root is light: importing it must not load torch."""
    code = "import sys, splitserve; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
