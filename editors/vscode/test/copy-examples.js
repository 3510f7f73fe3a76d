// Copies the repository's example flows beside their grammar snapshots (test/examples/*.snap),
// so `vscode-tmgrammar-snap` checks the highlighting of every example. The copies are not
// committed; the snapshots are (`npm run snap:update` after an example changes).
"use strict";
const fs = require("fs");
const path = require("path");

const from = path.join(__dirname, "..", "..", "..", "examples");
const to = path.join(__dirname, "examples");

function copy(dir) {
  for (const entry of fs.readdirSync(path.join(from, dir), { withFileTypes: true })) {
    const rel = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      copy(rel);
    } else if (entry.name.endsWith(".phx")) {
      fs.mkdirSync(path.join(to, dir), { recursive: true });
      fs.copyFileSync(path.join(from, rel), path.join(to, rel));
    }
  }
}
copy("");
