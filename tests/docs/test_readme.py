"""README.md, the newcomer's page: short, starting with the two commands, linking to docs/
pages that exist, and a diagram of the flow whose nodes and arrows are template.yaml's."""

from __future__ import annotations

import re

import pytest

from tests.docs import support as ds

MAX_README_LINES = 300


def edges() -> set[tuple[str, str, str]]:
    return ds.mermaid_edges(ds.doc("README.md"))


def has_edge(source: str | None, target: str | None) -> bool:
    return any(a == source and b == target for a, b, _ in edges())


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_is_a_short_page_that_starts_with_make_demo_and_make_test() -> None:
    text = ds.doc("README.md")
    assert len(text.splitlines()) <= MAX_README_LINES
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings[0] == "Quickstart"
    quickstart = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quickstart
    assert "make test" in quickstart
    assert "Events on the bus" in quickstart  # a pasted demo run, not a description


def test_every_link_between_the_pages_reaches_a_file_and_its_heading() -> None:
    for name, text in ds.all_docs().items():
        base = ds.ROOT if name == "README.md" else ds.DOCS
        for target in ds.links(text):
            if target.startswith(("http://", "https://")):
                continue
            # Given a relative link (file, file#anchor or #anchor) of a page
            path, _, anchor = target.partition("#")
            file = (base / path).resolve() if path else base / name
            # Then the file exists, and so does the heading the anchor names
            assert file.exists(), f"{name}: {target}"
            if anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
                assert anchor in {slug(h) for h in headings}, f"{name}: {target}"


def test_the_readme_links_to_every_page_of_docs() -> None:
    linked = {target.partition("#")[0] for target in ds.links(ds.doc("README.md"))}
    assert sorted({f"docs/{p.name}" for p in ds.DOCS.glob("*.md")} - linked) == []


def test_the_diagram_names_only_template_resources_and_shows_every_main_one() -> None:
    # Given the diagram's nodes (capitalised ones are logical IDs; lower-case ones are
    # outside the stack: producers, Sinch...)
    named = {node for a, b, _ in edges() for node in (a, b) if node[0].isupper()}
    # Then every capitalised node is a resource or parameter of the template
    assert sorted(named - set(ds.resources()) - set(ds.template()["Parameters"])) == []
    # And every function, queue, table, bus, archive, rule and API of the template appears
    (diagram,) = ds.fenced_blocks(ds.doc("README.md"), "mermaid")
    kinds = r"::(Function|HttpApi|SQS::Queue|Table|EventBus|Archive|Events::Rule)$"
    expected = {n for n, r in ds.resources().items() if re.search(kinds, r["Type"])}
    assert sorted(name for name in expected if name not in diagram) == []


def test_the_diagram_arrows_into_functions_are_their_triggers() -> None:
    # Given each function's event sources (queue, table stream, API) in the template
    for name in ds.functions():
        # Then the diagram draws an arrow from each into the function
        for source in ds.triggers(name):
            assert has_edge(source, name), f"{source} --> {name} is missing"
    # And no arrow enters a function from anything else of the template except the secret
    for source, target, _ in edges():
        if target in ds.functions() and source[0].isupper() and source != "SinchSecretArn":
            assert source in ds.triggers(target), f"{source} --> {target} is not a trigger"


@pytest.mark.parametrize(
    ("action", "target"),
    [
        ("sqs:SendMessage", "EnrichmentQueue"),
        ("sqs:SendMessage", "PublisherFailureQueue"),
        ("dynamodb:UpdateItem", "CallsTable"),
        ("dynamodb:", "SpendTable"),
        ("events:PutEvents", "CallsEventBus"),
    ],
)
def test_the_diagram_arrows_out_of_functions_are_their_permissions(
    action: str, target: str
) -> None:
    for name in ds.functions():
        # Given whether the function's role allows the action on the resource
        allowed = target in ds.granted(name, action)
        # Then the diagram draws the arrow exactly when it does
        assert has_edge(name, target) == allowed, f"{name} --> {target}: role says {allowed}"


def test_the_diagram_shows_who_reads_the_secret_the_dlq_the_archive_and_the_rule() -> None:
    # Given the secret readers, the redrive policy, the archive and the example rule
    for name in ds.functions():
        reads = "SinchSecretArn" in ds.granted(name, "secretsmanager:GetSecretValue")
        assert has_edge("SinchSecretArn", name) == reads, name
    for queue, spec in ds.resources("AWS::SQS::Queue").items():
        redrive = spec["Properties"].get("RedrivePolicy")
        if redrive:
            assert has_edge(queue, ds.resource_name(redrive["deadLetterTargetArn"]))
    for archive, spec in ds.resources("AWS::Events::Archive").items():
        assert has_edge(ds.resource_name(spec["Properties"]["SourceArn"]), archive)
    for rule, spec in ds.resources("AWS::Events::Rule").items():
        bus = ds.resource_name(spec["Properties"]["EventBusName"])
        for target in spec["Properties"]["Targets"]:
            # Then each is an arrow (a rule's arrow is labelled with its name)
            assert (bus, ds.resource_name(target["Arn"]), rule) in edges()
