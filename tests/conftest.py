import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import Stack, mint_token  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    st = Stack(workers=2, threads=16).start()
    yield st
    codes = st.stop()
    bad = {k: v for k, v in codes.items() if v not in (0, None, -15)}
    assert not bad, f"processes did not exit cleanly on SIGTERM: {bad}"


@pytest.fixture(scope="session")
def token(stack):
    return stack.token("tester")


@pytest.fixture(scope="session")
def auth(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture()
def client(stack, token):
    from hypeman import Hypeman

    c = Hypeman(base_url=stack.url, api_key=token, max_retries=0, _strict_response_validation=True, timeout=120)
    yield c
    c.close()
