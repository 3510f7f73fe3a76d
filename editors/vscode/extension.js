// Starts `phoenix lsp` for .phx files. Everything the editor shows about a flow (diagnostics,
// quick fixes, hover, completion, navigation, outline, formatting, semantic highlighting) comes
// from the server; this file only launches it.
"use strict";

const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

async function start() {
  const config = vscode.workspace.getConfiguration("phoenix");
  const command = config.get("server.path") || "phoenix";
  const args = ["lsp", ...(config.get("server.extraArgs") || [])];
  client = new LanguageClient(
    "phoenix",
    "Phoenix",
    { command, args },
    { documentSelector: [{ language: "phoenix" }] },
  );
  try {
    await client.start();
  } catch (e) {
    vscode.window.showErrorMessage(
      `Could not start \`${command} lsp\`: ${e.message}. Set "phoenix.server.path" to the phoenix binary.`,
    );
  }
}

async function activate(context) {
  await start();
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration("phoenix.server")) {
        if (client) await client.stop();
        await start();
      }
    }),
  );
}

async function deactivate() {
  if (client) await client.stop();
}

module.exports = { activate, deactivate };
