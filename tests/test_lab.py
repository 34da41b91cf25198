"""JupyterLab from ``.venv`` (what ``make lab`` starts): it serves the book and lists its notebooks.

The server runs headless on a port the operating system picks, with a fresh token and its own
configuration and runtime directories; the test asks its REST API for the book's folder, one
notebook and the front end, starts a kernel and asks it which Python and which library it runs,
then shuts the server down through the API.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

JUPYTER = pathlib.Path(sys.executable).parent / "jupyter"
STARTUP_TIMEOUT_S = 120


def fail_if_exited(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is not None:
        log = proc.stdout.read()[-4000:]
        pytest.fail(f"jupyter lab exited with status {proc.returncode} before serving:\n{log}")


def server_info(runtime: pathlib.Path, proc: subprocess.Popen[str]) -> dict[str, object]:
    """Wait for the server's ``jpserver-<pid>.json`` and for its port to accept connections; return the info.

    The server writes the file before its event loop binds the port, so the file alone does not mean
    the server is listening.
    """
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    info_file = runtime / f"jpserver-{proc.pid}.json"
    info: dict[str, object] | None = None
    while time.monotonic() < deadline:
        fail_if_exited(proc)
        if info is None and info_file.is_file():
            try:
                info = json.loads(info_file.read_text())
            except json.JSONDecodeError:
                pass  # written but not yet complete
        if info is not None:
            try:
                socket.create_connection(("127.0.0.1", int(info["port"])), timeout=5).close()
                return info
            except OSError:
                pass  # not listening yet
        time.sleep(0.2)
    what = f"listened on port {info['port']}" if info else f"wrote {info_file.name}"
    pytest.fail(f"jupyter lab never {what} within {STARTUP_TIMEOUT_S} s")


@pytest.fixture(scope="module")
def lab(root: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, pathlib.Path]]:
    """Start ``jupyter lab book`` as ``make lab`` does, headless; yield (base URL, token, runtime dir); stop it."""
    assert JUPYTER.is_file(), f"{JUPYTER} is missing: is jupyterlab installed in the environment?"
    home = tmp_path_factory.mktemp("lab")
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_PLATFORM_DIRS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(JUPYTER), "lab", "book", "--no-browser", "--ip=127.0.0.1", "--port=0",
         f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        info = server_info(home / "runtime", proc)
        base = f"http://127.0.0.1:{info['port']}"
        print(f"jupyter lab serving on port {info['port']} after {time.perf_counter() - start:.1f} s")
        yield base, token, home / "runtime"
        try:
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"),
                                   timeout=10)
            proc.wait(timeout=30)
        except (urllib.error.URLError, subprocess.TimeoutExpired):
            pass
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()


def post(base: str, token: str, path: str, payload: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(f"{base}{path}?token={token}", data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read().decode())


def get(base: str, token: str, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"{base}{path}{'&' if '?' in path else '?'}token={token}", timeout=30) as r:
        return r.status, r.read().decode()


def test_lab_lists_the_books_notebooks(lab: tuple[str, str], root: pathlib.Path) -> None:
    base, token, _ = lab
    status, body = get(base, token, "/api/contents/?content=1")
    assert status == 200
    listing = json.loads(body)
    served = {item["name"] for item in listing["content"] if item["type"] == "notebook"}
    on_disk = {p.name for p in (root / "book").glob("*.ipynb")}
    assert on_disk, "book/ holds no notebook"
    assert served == on_disk, f"JupyterLab lists {sorted(served)}, book/ holds {sorted(on_disk)}"


def test_lab_opens_a_chapter(lab: tuple[str, str], root: pathlib.Path) -> None:
    base, token, _ = lab
    status, body = get(base, token, "/api/contents/notation.ipynb?content=1")
    assert status == 200
    model = json.loads(body)
    assert model["type"] == "notebook" and model["format"] == "json"
    cells_on_disk = len(json.loads((root / "book" / "notation.ipynb").read_text())["cells"])
    assert len(model["content"]["cells"]) == cells_on_disk


def test_lab_serves_the_front_end(lab: tuple[str, str, pathlib.Path]) -> None:
    base, token, _ = lab
    status, page = get(base, token, "/lab")
    assert status == 200
    assert '"appName": "JupyterLab"' in page or '"appName":"JupyterLab"' in page, "/lab did not serve JupyterLab"


def test_lab_refuses_requests_without_the_token(lab: tuple[str, str]) -> None:
    base, _, _ = lab
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(f"{base}/api/contents/", timeout=30)
    assert excinfo.value.code == 403


def test_lab_kernel_runs_the_environment_with_the_library(lab: tuple[str, str, pathlib.Path],
                                                          root: pathlib.Path) -> None:
    """Start a chapter's kernel through the API and ask it, over its connection file, what it runs."""
    from jupyter_client import BlockingKernelClient

    base, token, runtime = lab
    kernel = post(base, token, "/api/kernels", {"path": ""})
    client = BlockingKernelClient(connection_file=str(runtime / f"kernel-{kernel['id']}.json"))
    client.load_connection_file()
    client.start_channels()
    printed: list[str] = []

    def keep_stdout(msg: dict) -> None:
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            printed.append(msg["content"]["text"])

    try:
        client.wait_for_ready(timeout=60)
        reply = client.execute_interactive(
            "import os, sys, softmax_icl; print(sys.prefix, softmax_icl.__file__, os.getcwd(), sep='\\n')",
            timeout=60, output_hook=keep_stdout)
    finally:
        client.stop_channels()
        urllib.request.urlopen(urllib.request.Request(f"{base}/api/kernels/{kernel['id']}?token={token}",
                                                      method="DELETE"), timeout=30)
    assert reply["content"]["status"] == "ok", f"the kernel could not import the library: {reply['content']}"
    prefix, library, cwd = "".join(printed).splitlines()
    assert pathlib.Path(prefix).resolve() == pathlib.Path(sys.prefix).resolve(), (
        f"the kernel runs {prefix}, not the environment {sys.prefix}")
    assert pathlib.Path(library).resolve().is_relative_to(root / "lib"), f"the kernel imports {library}"
    assert pathlib.Path(cwd).resolve() == (root / "book").resolve(), f"the kernel starts in {cwd}, not in book/"
