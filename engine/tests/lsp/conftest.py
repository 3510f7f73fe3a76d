"""`phoenix lsp` driven over stdio by a real LSP client (pytest-lsp, on pygls).

The binary is PHOENIX_BIN (engine/tests/lsp.rs sets it to the one cargo built). Each test gets a
fresh server and its own copy of the example flows, opened by file URI as an editor would.
"""

import os
import pathlib
import shutil
import sys

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

ROOT = pathlib.Path(__file__).resolve().parents[3]
PHOENIX = os.environ.get("PHOENIX_BIN")
if not PHOENIX:
    sys.exit("set PHOENIX_BIN to the phoenix binary (cargo test -p phoenix-engine --test lsp does)")


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[PHOENIX, "lsp"]))
async def client(lsp_client: LanguageClient):
    # Neovim's capabilities: a real client's, so pytest-lsp also checks the server sends
    # nothing the client did not ask for.
    params = types.InitializeParams(capabilities=pytest_lsp.client_capabilities("neovim"))
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


@pytest.fixture
def examples(tmp_path):
    """A writable copy of examples/ (flows and the files they import)."""
    dst = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", dst, ignore=shutil.ignore_patterns("data"))
    return dst
