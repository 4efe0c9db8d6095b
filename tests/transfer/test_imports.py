import subprocess
import sys


def test_transfer_package_does_not_import_torch_or_engine() -> None:
    code = (
        "import sys, splitserve.transfer; "
        "bad = [m for m in ('torch', 'splitserve.engine', 'splitserve.model') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
