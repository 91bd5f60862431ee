"""openapi.json is generated from the code and committed: it must not be stale."""

from __future__ import annotations

import json

from call_enricher_tools import openapi


def test_committed_openapi_json_matches_the_code():
    # When the document is rendered from functions/http_api/app.py
    rendered = openapi.render()
    # Then it is byte for byte what is committed (run python -m call_enricher_tools.openapi)
    assert openapi.DOCUMENT.read_text() == rendered


def test_document_describes_every_route_and_the_error_shape():
    document = json.loads(openapi.render())
    assert set(document["paths"]) == {"/calls", "/calls/{callId}", "/calls/{callId}/enrich"}
    assert set(document["paths"]["/calls/{callId}/enrich"]["post"]["responses"]) >= {
        "200",
        "404",
        "422",
        "502",
        "504",
    }
    error = document["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]


def test_check_mode_fails_on_a_stale_file(tmp_path):
    stale = tmp_path / "openapi.json"
    stale.write_text("{}\n")
    assert openapi.main(["--check", "--output", str(stale)]) == 1
    assert openapi.main(["--output", str(stale)]) == 0
    assert openapi.main(["--check", "--output", str(stale)]) == 0
