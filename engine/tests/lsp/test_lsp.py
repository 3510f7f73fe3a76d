"""Every feature of `phoenix lsp`, through a real client, on the example flows."""

import asyncio
import os
import pathlib
import subprocess

from lsprotocol import types as t
from pytest_lsp import LanguageClient

PUBLISH = t.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS


def position(text: str, needle: str, into: int = 0, nth: int = 0) -> t.Position:
    """The LSP position (UTF-16 columns) of `into` characters into the nth `needle`."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    return position_at(text, at + into)


def position_at(text: str, at: int) -> t.Position:
    line = text.count("\n", 0, at)
    start = text.rfind("\n", 0, at) + 1
    return t.Position(line=line, character=len(text[start:at].encode("utf-16-le")) // 2)


async def diagnostics(client: LanguageClient, uri: str) -> list[t.Diagnostic]:
    """The next diagnostics published for `uri` (callers clear the old ones first)."""

    async def wait():
        while uri not in client.diagnostics:
            await client.wait_for_notification(PUBLISH)
        return list(client.diagnostics[uri])

    return await asyncio.wait_for(wait(), timeout=20)


async def diagnostics_until(client: LanguageClient, uri: str, holds) -> list[t.Diagnostic]:
    """The diagnostics of `uri` once they satisfy `holds` (a dependent file is checked again
    after its import changes, so earlier publications may still be arriving)."""

    async def wait():
        while not holds(list(client.diagnostics.get(uri, []))) or uri not in client.diagnostics:
            await client.wait_for_notification(PUBLISH)
        return list(client.diagnostics[uri])

    return await asyncio.wait_for(wait(), timeout=20)


async def open_doc(client: LanguageClient, path: pathlib.Path, text: str | None = None) -> tuple[str, str]:
    text = path.read_text() if text is None else text
    uri = path.as_uri()
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(
        t.DidOpenTextDocumentParams(
            text_document=t.TextDocumentItem(uri=uri, language_id="phoenix", version=1, text=text)
        )
    )
    return uri, text


async def change(client: LanguageClient, uri: str, text: str, version: int):
    client.diagnostics.pop(uri, None)
    client.text_document_did_change(
        t.DidChangeTextDocumentParams(
            text_document=t.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[t.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


def apply(text: str, edits: list[t.TextEdit]) -> str:
    """`edits` applied to `text` (positions in UTF-16 columns), last first."""
    lines = text.split("\n")

    def offset(p: t.Position) -> int:
        before = sum(len(l) + 1 for l in lines[: p.line])
        line = lines[p.line] if p.line < len(lines) else ""
        units, i = 0, 0
        while i < len(line) and units < p.character:
            units += len(line[i].encode("utf-16-le")) // 2
            i += 1
        return before + i

    spans = sorted(((offset(e.range.start), offset(e.range.end), e.new_text) for e in edits), reverse=True)
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text


def labels(items) -> set[str]:
    if isinstance(items, t.CompletionList):
        items = items.items
    return {i.label for i in items}


# ---- diagnostics and quick fixes -----------------------------------------------------------------


async def test_clean_examples_have_no_errors(client: LanguageClient, examples):
    for name in ["commerce.phx", "iot.phx", "logs.phx", "quickstart.phx", "commerce-search.phx"]:
        uri, _ = await open_doc(client, examples / name)
        errors = [d for d in await diagnostics(client, uri) if d.severity == t.DiagnosticSeverity.Error]
        assert errors == [], (name, errors)


async def test_typo_is_reported_at_its_line_with_code_link_and_fixed(client: LanguageClient, examples):
    path = examples / "commerce.phx"
    good = path.read_text()
    text = good.replace("coalesce(@remote, 'unknown')", "coalesce(@remote, 'unknown', amuont)")
    uri, _ = await open_doc(client, path, text)
    [d] = [d for d in await diagnostics(client, uri) if d.severity == t.DiagnosticSeverity.Error]
    assert d.code == "E0020"
    assert d.range.start == position(text, "amuont")
    assert d.range.end == position(text, "amuont", into=6)
    assert "did you mean `amount`?" in d.message
    assert d.code_description.href.endswith("docs/diagnostics.md#e0020")
    assert d.source == "phoenix"

    actions = await client.text_document_code_action_async(
        t.CodeActionParams(
            text_document=t.TextDocumentIdentifier(uri=uri),
            range=d.range,
            context=t.CodeActionContext(diagnostics=[d]),
        )
    )
    [fix] = [a for a in actions if a.title == "replace with `amount`"]
    assert fix.kind == t.CodeActionKind.QuickFix and fix.is_preferred
    fixed = apply(text, fix.edit.changes[uri])
    assert "coalesce(@remote, 'unknown', amount)" in fixed
    await change(client, uri, fixed, 2)
    assert [d for d in await diagnostics(client, uri) if d.code == "E0020"] == []


async def test_related_spans_point_at_the_first_definition(client: LanguageClient, examples):
    path = examples / "flow.phx"
    text = (
        'schema E { id: string }\n'
        'source s = stdin as E\n'
        'sink s = stdout\n'
        's | drop\n'
    )
    uri, _ = await open_doc(client, path, text)
    [d] = [d for d in await diagnostics(client, uri) if d.code == "E0010"]
    assert d.range.start == position(text, "s = stdout")
    [related] = d.related_information
    assert related.location.uri == uri
    assert related.location.range.start == position(text, "s = stdin")
    assert "first defined here" in related.message


async def test_missing_else_is_added_by_a_quick_fix(client: LanguageClient, examples):
    path = examples / "flow.phx"
    text = (
        "schema E { tier: string }\n"
        "source s = stdin as E\n"
        "sink vip = stdout\n"
        "route s by tier {\n"
        "  'gold' => vip\n"
        "}\n"
    )
    uri, _ = await open_doc(client, path, text)
    [d] = [d for d in await diagnostics(client, uri) if d.code == "W0001"]
    actions = await client.text_document_code_action_async(
        t.CodeActionParams(
            text_document=t.TextDocumentIdentifier(uri=uri), range=d.range, context=t.CodeActionContext(diagnostics=[d])
        )
    )
    [fix] = [a for a in actions if "else => drop" in a.title]
    fixed = apply(text, fix.edit.changes[uri])
    assert "  'gold' => vip,\n  else => drop,\n}" in fixed
    await change(client, uri, fixed, 2)
    assert await diagnostics(client, uri) == []


async def test_unread_errors_port_is_wired_by_a_quick_fix(client: LanguageClient, examples):
    path = examples / "flow.phx"
    text = (
        'import "common/dead_letters.phx"\n'
        "schema E { id: string }\n"
        "source s = stdin as E\n"
        "source t = stdin as E\n"
        "sink out = stdout\n"
        "s | out\n"
        "t | out\n"
        "t.errors | dead_letters\n"
    )
    uri, _ = await open_doc(client, path, text)
    await diagnostics(client, uri)
    here = position(text, "source s")
    actions = await client.text_document_code_action_async(
        t.CodeActionParams(
            text_document=t.TextDocumentIdentifier(uri=uri),
            range=t.Range(start=here, end=here),
            context=t.CodeActionContext(diagnostics=[]),
        )
    )
    titles = [a.title for a in actions]
    assert any("`s.errors`" in x and "`dead_letters`" in x for x in titles), titles
    [new] = [a for a in actions if "new file sink" in a.title]
    fixed = apply(text, new.edit.changes[uri])
    assert 'source s = stdin as E\nsink s_errors = file { path = "s-errors.jsonl" }\ns.errors | s_errors\n' in fixed
    await change(client, uri, fixed, 2)
    assert [d for d in await diagnostics(client, uri) if d.severity == t.DiagnosticSeverity.Error] == []


async def test_imports_come_from_open_documents_first(client: LanguageClient, examples):
    main = examples / "flow.phx"
    lib = examples / "common" / "lib.phx"
    lib.write_text("sink out = stdout\n")
    text = 'import "common/lib.phx"\nsource s = stdin\ns | out\n'
    uri, _ = await open_doc(client, main, text)
    assert await diagnostics(client, uri) == []
    # The library is edited (not saved): the importer is checked against the editor's text.
    lib_uri, _ = await open_doc(client, lib, "sink outs = stdout\n")
    [d] = await diagnostics_until(client, uri, lambda ds: len(ds) == 1)
    assert d.code == "E0012" and "did you mean `outs`?" in d.message
    # A problem inside the imported file shows on the import line, pointing into the file.
    await change(client, lib_uri, "sink out = stdout\nsink out2 = nosuch\n", 2)
    ds = await diagnostics_until(client, uri, lambda ds: any(d.code == "E0040" for d in ds))
    [d] = [d for d in ds if d.code == "E0040"]
    assert d.range.start.line == 0 and "in imported" in d.message
    assert d.related_information[0].location.uri == lib_uri


# ---- hover ------------------------------------------------------------------------------------


async def hover(client, uri, text, needle, into=1, nth=0) -> str:
    h = await client.text_document_hover_async(
        t.HoverParams(text_document=t.TextDocumentIdentifier(uri=uri), position=position(text, needle, into, nth))
    )
    assert h is not None, needle
    return h.contents.value


async def test_hover(client: LanguageClient, examples):
    uri, text = await open_doc(client, examples / "commerce.phx")
    await diagnostics(client, uri)
    field = await hover(client, uri, text, "coalesce(amount", into=10)
    assert "amount: float?" in field and "schema `CommerceEvent`" in field
    # A field whose type is a schema (declared in the file commerce.phx imports) shows the
    # record it stands for, here at a use written into the flow for the test.
    path = examples / "commerce.phx"
    used = text.replace("| where trim(id) != ''", "| where trim(id) != '' and customer.address.city != ''", 1)
    nested_uri, _ = await open_doc(client, path, used)
    await diagnostics(client, nested_uri)
    nested = await hover(client, nested_uri, used, "address.city", into=1)
    assert "address: { street: string?" in nested
    uri, text = await open_doc(client, path)
    await diagnostics(client, uri)
    func = await hover(client, uri, text, "round(amount")
    assert "round(value: float, [digits: int]) -> float" in func and "round(" in func.split("Examples:")[1]
    conn = await hover(client, uri, text, "= kafka {", into=3)
    assert "kafka (sink)" in conn and "| `brokers` |" in conn
    opt = await hover(client, uri, text, "bulk_max_events")
    assert "bulk_max_events: int" in opt and "Default:" in opt
    meta = await hover(client, uri, text, "(@remote", into=2)
    assert "@remote: string?" in meta
    sink = await hover(client, uri, text, "| search", into=3)
    assert "sink search = elasticsearch" in sink and "Receives:" in sink and "channel: string" in sink
    dead = await hover(client, uri, text, "| dead_letters", into=3)
    assert "Contract" in dead and "DeadLetter" in dead


# ---- completion ---------------------------------------------------------------------------------


async def complete(client, uri, pos) -> set[str]:
    result = await client.text_document_completion_async(
        t.CompletionParams(text_document=t.TextDocumentIdentifier(uri=uri), position=pos)
    )
    return labels(result)


async def test_completion_in_the_middle_of_an_edit(client: LanguageClient, examples):
    path = examples / "commerce.phx"
    good = path.read_text()
    uri, _ = await open_doc(client, path, good)
    await diagnostics(client, uri)

    async def at_edit(old: str, new: str, cursor: int | None = None) -> set[str]:
        """Completion `cursor` characters into `new` (at its end by default), written over the
        first `old`."""
        text = good.replace(old, new, 1)
        await change(client, uri, text, 2)
        at = good.index(old) + (len(new) if cursor is None else cursor)
        return await complete(client, uri, position_at(text, at))

    # Fields and functions after `where`, nested fields after `.`.
    got = await at_edit("| where trim(id) != ''", "| where ")
    assert {"amount", "customer", "type", "lower", "coalesce", "not"} <= got
    got = await at_edit("| where trim(id) != ''", "| where customer.")
    assert got == {"id", "tier", "address"}
    got = await at_edit("| where trim(id) != ''", "| where customer.address.c")
    assert {"city", "country", "street"} == got
    # Metadata after `@`.
    got = await at_edit("coalesce(@remote, 'unknown')", "coalesce(@")
    assert {"remote", "size"} <= got
    # Sinks and stages after `|`.
    got = await at_edit("valid | search", "valid | ")
    assert {"search", "rejected", "dead_letters", "where", "select", "drop"} <= got
    assert "api" not in got
    # Sinks and `drop` as an arm's target.
    got = await at_edit("  'product' => products,", "  'product' => ")
    assert {"products", "rejected", "drop", "where", "select", "route"} <= got
    # Streams after `route`.
    got = await at_edit("route valid by type", "route ")
    assert {"api", "from_http", "events", "valid", "api.errors", "search.errors"} <= got and "search" not in got
    # Streams inside a merge.
    got = await at_edit("merge(from_http, from_files)", "merge(from_http, ")
    assert {"from_files", "batch", "api.errors"} <= got and "search" not in got
    # Connectors after `=`, then the options of the connector being written.
    got = await at_edit("sink rejected = file {", "sink rejected = ")
    assert {"file", "kafka", "elasticsearch", "stdout"} <= got and "http" not in got
    got = await at_edit("  linger = 500ms,\n", "  \n", 2)
    assert {"linger", "bulk_max_bytes", "max_attempts"} <= got and "url" not in got
    # Values of other arms routed by the same key.
    got = await at_edit("  'supplier' => suppliers,\n", "  \n", 2)
    assert {"'product'", "'order'", "'supplier'", "else"} <= got


async def test_completion_items_carry_types_and_docs(client: LanguageClient, examples):
    path = examples / "flow.phx"
    text = "schema E { n: int, tag: string? }\nsource s = kafka { } as E\ns | where  | drop\n"
    uri, _ = await open_doc(client, path, text)
    await diagnostics(client, uri)
    result = await client.text_document_completion_async(
        t.CompletionParams(text_document=t.TextDocumentIdentifier(uri=uri), position=position(text, "where ", 6))
    )
    by_label = {i.label: i for i in result}
    assert by_label["n"].detail == "int" and by_label["tag"].detail == "string?"
    assert by_label["lower"].detail == "lower(value: string) -> string"
    result = await client.text_document_completion_async(
        t.CompletionParams(text_document=t.TextDocumentIdentifier(uri=uri), position=position(text, "{ ", 2, nth=1))
    )
    by_label = {i.label: i for i in result}
    assert by_label["brokers"].detail.endswith("(required)")
    assert by_label["batch_size"].detail == "int (default 8192)"


# ---- navigation -----------------------------------------------------------------------------------


async def test_definition_references_and_rename_across_imports(client: LanguageClient, examples):
    uri, text = await open_doc(client, examples / "commerce.phx")
    await diagnostics(client, uri)
    lib_uri = (examples / "common" / "dead_letters.phx").as_uri()
    at = position(text, "| dead_letters", 3)
    doc = t.TextDocumentIdentifier(uri=uri)

    found = await client.text_document_definition_async(t.DefinitionParams(text_document=doc, position=at))
    lib_text = (examples / "common" / "dead_letters.phx").read_text()
    assert found.uri == lib_uri and found.range.start == position(lib_text, "dead_letters =")

    refs = await client.text_document_references_async(
        t.ReferenceParams(text_document=doc, position=at, context=t.ReferenceContext(include_declaration=True))
    )
    assert len([r for r in refs if r.uri == uri]) == 8 and len([r for r in refs if r.uri == lib_uri]) == 1

    prepared = await client.text_document_prepare_rename_async(t.PrepareRenameParams(text_document=doc, position=at))
    assert prepared.placeholder == "dead_letters"
    edit = await client.text_document_rename_async(t.RenameParams(text_document=doc, position=at, new_name="graveyard"))
    assert len(edit.changes[uri]) == 8 and len(edit.changes[lib_uri]) == 1
    assert all(e.new_text == "graveyard" for e in edit.changes[uri])

    # A field: its declaration in the imported schema, its uses in expressions, through
    # `select *`.
    schemas = examples / "common" / "commerce_events.phx"
    schemas_uri, schemas_text = schemas.as_uri(), schemas.read_text()
    at = position(text, "coalesce(amount", 10)
    found = await client.text_document_definition_async(t.DefinitionParams(text_document=doc, position=at))
    assert found.uri == schemas_uri and found.range.start == position(schemas_text, "amount: float?")
    edit = await client.text_document_rename_async(t.RenameParams(text_document=doc, position=at, new_name="net"))
    renamed = apply(text, edit.changes[uri])
    assert "coalesce(net, 0) >= 0" in renamed and "round(net *" in renamed
    renamed_schemas = apply(schemas_text, edit.changes[schemas_uri])
    # `ExportRecord` has a field of the same name, but it is another field.
    assert renamed_schemas.count("net: float?") == 1 and renamed_schemas.count("amount: float?") == 1
    # With both files edited as the rename says, the flow checks clean.
    await open_doc(client, schemas, renamed_schemas)
    await change(client, uri, renamed, 2)
    # Publications for the flow checked against only one of the two edits may still arrive.
    errors = lambda ds: [d for d in ds if d.severity == t.DiagnosticSeverity.Error]
    assert errors(await diagnostics_until(client, uri, lambda ds: errors(ds) == [])) == []
    client.text_document_did_close(t.DidCloseTextDocumentParams(text_document=t.TextDocumentIdentifier(uri=schemas_uri)))

    # An import's path leads to the file.
    found = await client.text_document_definition_async(
        t.DefinitionParams(text_document=doc, position=position(renamed, "common/dead", 2))
    )
    assert found.uri == lib_uri


async def test_document_symbols(client: LanguageClient, examples):
    uri, _ = await open_doc(client, examples / "commerce.phx")
    await diagnostics(client, uri)
    symbols = await client.text_document_document_symbol_async(
        t.DocumentSymbolParams(text_document=t.TextDocumentIdentifier(uri=uri))
    )
    names = [s.name for s in symbols]
    assert {"api", "batch", "search", "from_http", "common/commerce_events.phx", "common/dead_letters.phx"} <= set(names)
    assert any(s.kind == t.SymbolKind.Method and s.name.startswith("a valid order") for s in symbols)
    lib_uri, _ = await open_doc(client, examples / "common" / "commerce_events.phx")
    await diagnostics(client, lib_uri)
    symbols = await client.text_document_document_symbol_async(
        t.DocumentSymbolParams(text_document=t.TextDocumentIdentifier(uri=lib_uri))
    )
    assert {"CommerceEvent", "ExportRecord", "Customer", "Address"} <= {s.name for s in symbols}
    schema = next(s for s in symbols if s.name == "Customer")
    assert schema.kind == t.SymbolKind.Struct and [c.name for c in schema.children] == ["id", "tier", "address"]


async def test_formatting_is_phoenix_fmt(client: LanguageClient, examples):
    path = examples / "flow.phx"
    text = "schema E{id:string}\nsource   s=stdin as E\ns|where id!=''|drop\n"
    uri, _ = await open_doc(client, path, text)
    await diagnostics(client, uri)
    edits = await client.text_document_formatting_async(
        t.DocumentFormattingParams(
            text_document=t.TextDocumentIdentifier(uri=uri), options=t.FormattingOptions(tab_size=2, insert_spaces=True)
        )
    )
    formatted = apply(text, edits)
    assert formatted == "schema E {\n  id: string,\n}\n\nsource s = stdin as E\n\ns | where id != '' | drop\n"
    # The same as `phoenix fmt` writes.
    path.write_text(text)
    subprocess.run([os.environ["PHOENIX_BIN"], "fmt", str(path)], check=True, capture_output=True)
    assert path.read_text() == formatted
    # Broken text is left alone.
    await change(client, uri, "source s = ", 2)
    edits = await client.text_document_formatting_async(
        t.DocumentFormattingParams(
            text_document=t.TextDocumentIdentifier(uri=uri), options=t.FormattingOptions(tab_size=2, insert_spaces=True)
        )
    )
    assert not edits


async def test_semantic_tokens(client: LanguageClient, examples):
    uri, text = await open_doc(client, examples / "quickstart.phx")
    await diagnostics(client, uri)
    tokens = await client.text_document_semantic_tokens_full_async(
        t.SemanticTokensParams(text_document=t.TextDocumentIdentifier(uri=uri))
    )
    data = tokens.data
    assert len(data) % 5 == 0 and len(data) > 0
    # Decode and check every token covers a name in the text.
    lines = text.split("\n")
    line = col = 0
    decoded = []
    for i in range(0, len(data), 5):
        dl, ds, length, ty, mods = data[i : i + 5]
        line += dl
        col = ds if dl else col + ds
        decoded.append((lines[line][col : col + length], ty, mods))
    assert all(word and " " not in word for word, _, _ in decoded), decoded
    # The legend: 0 type (schemas), 1 variable (streams), 2 property (fields), 3 function;
    # modifier bit 1 marks a declaration.
    assert ("Event", 0, 1) in decoded and ("events", 1, 1) in decoded and ("events", 1, 0) in decoded
    assert ("amount", 2, 1) in decoded and ("amount", 2, 0) in decoded and ("round", 3, 0) in decoded


async def test_broken_text_never_stops_the_server(client: LanguageClient, examples):
    uri, good = await open_doc(client, examples / "logs.phx")
    await diagnostics(client, uri)
    doc = t.TextDocumentIdentifier(uri=uri)
    for version, cut in enumerate(range(0, len(good), max(1, len(good) // 40)), start=2):
        text = good[:cut] + "\u00e9 ( ' \x00 `" + good[cut + 7 :]
        await change(client, uri, text, version)
        await diagnostics(client, uri)
        pos = position(text, text[cut : cut + 1] or text[-1:], 0, 0)
        await client.text_document_hover_async(t.HoverParams(text_document=doc, position=pos))
        await client.text_document_completion_async(t.CompletionParams(text_document=doc, position=pos))
        await client.text_document_document_symbol_async(t.DocumentSymbolParams(text_document=doc))
