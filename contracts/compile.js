#!/usr/bin/env node
// Offline compile of the reference contracts with solc-js (npm `solc`, standard-JSON input). OpenZeppelin
// sources come from node_modules; nothing is downloaded. Writes contracts/build/<Name>.json with
// {contractName, abi, bytecode, deployedBytecode, sourceHash} and skips the compile when the hash of the
// inputs (sources, compiler version, settings, OpenZeppelin version, this script) is unchanged.
//
// Usage: node contracts/compile.js [--force]
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");

const ROOT = path.resolve(__dirname, "..");
const SRC_DIR = __dirname;
const BUILD_DIR = path.join(__dirname, "build");
const TMP_DIR = path.join(BUILD_DIR, ".tmp");
const NODE_MODULES = path.join(ROOT, "node_modules");
// Contracts that get an artifact; every .sol in contracts/ is compiled.
const TARGETS = ["SubscriptionPass", "DemoToken"];

const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  // Cancun rather than the compiler's default (prague): more chains accept it, and OZ 5 needs nothing newer.
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

function loadSolc() {
  try {
    return require("solc");
  } catch (err) {
    console.error("solc-js is not installed: run `npm ci` (make deps does it).");
    process.exit(2);
  }
}

function sourceFiles() {
  return fs
    .readdirSync(SRC_DIR)
    .filter((f) => f.endsWith(".sol"))
    .sort();
}

function ozVersion() {
  try {
    return JSON.parse(fs.readFileSync(path.join(NODE_MODULES, "@openzeppelin/contracts/package.json"), "utf8")).version;
  } catch (err) {
    return "missing";
  }
}

function inputHash(solc, files) {
  const h = crypto.createHash("sha256");
  h.update(`solc=${solc.version()}\n`);
  h.update(`oz=${ozVersion()}\n`);
  h.update(`settings=${JSON.stringify(SETTINGS)}\n`);
  h.update(fs.readFileSync(__filename));
  for (const f of files) {
    h.update(`\n--- ${f}\n`);
    h.update(fs.readFileSync(path.join(SRC_DIR, f)));
  }
  return h.digest("hex");
}

function upToDate(hash) {
  return TARGETS.every((name) => {
    try {
      const artifact = JSON.parse(fs.readFileSync(path.join(BUILD_DIR, `${name}.json`), "utf8"));
      return artifact.sourceHash === hash && artifact.bytecode && artifact.bytecode.length > 2;
    } catch (err) {
      return false;
    }
  });
}

// Imports: "@openzeppelin/..." (and any other package) from node_modules; relative ones from contracts/.
function findImports(importPath) {
  const candidates = [path.join(NODE_MODULES, importPath), path.join(SRC_DIR, importPath)];
  for (const candidate of candidates) {
    const resolved = path.resolve(candidate);
    if (!resolved.startsWith(NODE_MODULES + path.sep) && !resolved.startsWith(SRC_DIR + path.sep)) continue;
    if (fs.existsSync(resolved)) return { contents: fs.readFileSync(resolved, "utf8") };
  }
  return { error: `File not found: ${importPath} (is node_modules installed?)` };
}

function main() {
  const force = process.argv.includes("--force");
  const solc = loadSolc();
  const files = sourceFiles();
  const hash = inputHash(solc, files);
  if (!force && upToDate(hash)) {
    console.log(`contracts: up to date (${hash.slice(0, 12)})`);
    return;
  }

  const started = process.hrtime.bigint();
  const sources = {};
  for (const f of files) sources[f] = { content: fs.readFileSync(path.join(SRC_DIR, f), "utf8") };
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));

  const problems = output.errors || [];
  const errors = problems.filter((e) => e.severity === "error");
  for (const w of problems.filter((e) => e.severity !== "error")) console.warn(w.formattedMessage || w.message);
  if (errors.length) {
    for (const e of errors) console.error(e.formattedMessage || e.message);
    console.error(`contracts: compilation failed with ${errors.length} error(s)`);
    process.exit(1);
  }

  fs.mkdirSync(TMP_DIR, { recursive: true });
  for (const name of TARGETS) {
    const file = `${name}.sol`;
    const compiled = output.contracts && output.contracts[file] && output.contracts[file][name];
    if (!compiled) {
      console.error(`contracts: ${name} not found in ${file}`);
      process.exit(1);
    }
    const artifact = {
      contractName: name,
      abi: compiled.abi,
      bytecode: "0x" + compiled.evm.bytecode.object,
      deployedBytecode: "0x" + compiled.evm.deployedBytecode.object,
      sourceHash: hash,
      compiler: solc.version(),
    };
    // Write then rename, so a reader never sees half an artifact.
    const tmp = path.join(TMP_DIR, `${name}.json`);
    fs.writeFileSync(tmp, JSON.stringify(artifact, null, 2) + "\n");
    fs.renameSync(tmp, path.join(BUILD_DIR, `${name}.json`));
  }
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  console.log(`contracts: compiled ${TARGETS.join(", ")} with solc ${solc.version()} in ${(ms / 1000).toFixed(1)} s`);
}

main();
