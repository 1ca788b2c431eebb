# The benchmark workload for pyinfra, written the way its documentation does it.
import os
import sys
from io import StringIO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from files import ENV_LINES, FILES, POOL_DIR  # noqa: E402

from pyinfra.operations import files  # noqa: E402

for path, content in FILES.items():
    files.put(name=f"Manage {path}", src=StringIO(content), dest=path, mode="644")

for key, value in ENV_LINES:
    files.line(
        name=f"{key} in /etc/environment",
        path="/etc/environment",
        line=f"^{key}=",
        replace=f'{key}="{value}"',
    )

files.directory(name="Image pool", path=POOL_DIR, mode="711")
