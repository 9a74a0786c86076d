"""The docs hooks' generators (docs/hooks/), imported the way MkDocs imports them."""

import sys

from tests.docs.doc_blocks import ROOT

sys.path.insert(0, str(ROOT / "docs" / "hooks"))

import code_reference  # noqa: E402,F401
import config_reference  # noqa: E402,F401
import fedray_site  # noqa: E402,F401
