"""lightseg.deploy without the SDK: importing it never imports the SDK, and a missing libcudart names the fix."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lightseg.deploy.runtime import CudartMissingError, cudart_candidates, preload_cudart


def test_importing_lightseg_deploy_does_not_import_the_sdk():
    code = (
        "import sys, lightseg, lightseg.deploy; "
        "bad = [m for m in sys.modules if m.startswith(('monai.deploy', 'holoscan', 'highdicom'))]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_missing_cudart_error_names_the_fix(tmp_path):
    with pytest.raises(CudartMissingError, match=r"nvidia-cuda-runtime==13\.0\.96.*LD_LIBRARY_PATH") as info:
        preload_cudart([str(tmp_path / "nvidia" / "cu13" / "lib" / "libcudart.so.13")])
    assert "libcudart.so.13" in str(info.value) and str(tmp_path) in str(info.value)
    assert isinstance(info.value, ImportError)


def test_cudart_candidates_include_the_pip_wheel_copy(tmp_path):
    lib = tmp_path / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcudart.so.13").write_bytes(b"")
    assert cudart_candidates([str(tmp_path)]) == ["libcudart.so.13", str(lib / "libcudart.so.13")]
