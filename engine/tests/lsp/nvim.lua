-- Neovim's built-in LSP client on `phoenix lsp` (engine/tests/lsp.rs runs it headless):
-- open a flow with a typo, find the diagnostic on the right line, apply the quick fix, format,
-- save. Written for Neovim 0.7 (Debian 12) and later. Exits 0 on success, 1 with a reason.
local bin, flow, line = os.getenv("PHOENIX_BIN"), os.getenv("FLOW"), tonumber(os.getenv("TYPO_LINE"))

local function wait(what, cond)
  if not vim.wait(20000, cond, 20) then
    error("timed out waiting for " .. what)
  end
end

local function request(buf, method, params)
  local responses, err = vim.lsp.buf_request_sync(buf, method, params, 20000)
  if not responses then
    error(method .. ": " .. tostring(err))
  end
  for _, r in pairs(responses) do
    if r.err then
      error(method .. ": " .. vim.inspect(r.err))
    end
    return r.result
  end
end

local ok, err = pcall(function()
  vim.cmd("edit " .. vim.fn.fnameescape(flow))
  local buf = vim.api.nvim_get_current_buf()
  local id = vim.lsp.start_client({ name = "phoenix", cmd = { bin, "lsp" }, root_dir = vim.fn.fnamemodify(flow, ":h") })
  assert(id, "the client did not start")
  vim.lsp.buf_attach_client(buf, id)

  wait("a diagnostic", function() return #vim.diagnostic.get(buf) > 0 end)
  local d = vim.diagnostic.get(buf)[1]
  assert(d.lnum == line, ("diagnostic on line %d, expected %d: %s"):format(d.lnum, line, d.message))
  assert(d.message:find("did you mean `amount`?", 1, true), d.message)

  local uri = vim.uri_from_bufnr(buf)
  local range = { start = { line = d.lnum, character = d.col }, ["end"] = { line = d.end_lnum, character = d.end_col } }
  local actions = request(buf, "textDocument/codeAction", {
    textDocument = { uri = uri }, range = range, context = { diagnostics = {} },
  })
  local fix
  for _, a in ipairs(actions or {}) do
    if a.title == "replace with `amount`" then fix = a end
  end
  assert(fix, "no quick fix among " .. vim.inspect(actions))
  vim.lsp.util.apply_workspace_edit(fix.edit, "utf-16")
  wait("the error to go", function()
    return #vim.diagnostic.get(buf, { severity = vim.diagnostic.severity.ERROR }) == 0
  end)

  local edits = request(buf, "textDocument/formatting", {
    textDocument = { uri = uri }, options = { tabSize = 2, insertSpaces = true },
  })
  assert(edits and #edits > 0, "formatting changed nothing")
  vim.lsp.util.apply_text_edits(edits, buf, "utf-16")
  vim.cmd("write")
  vim.lsp.stop_client(id)
end)

if ok then
  vim.cmd("qall!")
else
  io.stderr:write("FAIL: " .. tostring(err) .. "\n")
  vim.cmd("cquit 1")
end
