from tests.integration.conftest import model_dir  # noqa: F401  (the shared tiny checkpoint)
