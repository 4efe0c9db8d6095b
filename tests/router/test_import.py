import subprocess
import sys


def test_router_import_loads_no_torch_model_or_engine() -> None:
    code = (
        "import sys, splitserve.router, splitserve.router.cli, splitserve.router.app\n"
        "bad = [m for m in ('torch', 'transformers', 'splitserve.model', 'splitserve.engine')"
        " if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
