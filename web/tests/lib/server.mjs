// A real `chat-server` for the browser tests: the binary named by
// CHAT_SERVER_BIN (default ../../target/debug/chat-server), on a free
// loopback port, with a SQLite store in a temporary folder (so a restart
// keeps the messages), waited for until ready; stopped (SIGTERM: clients
// get their notice) and started again on the same port for the restart
// test; and the `chat` console client (CHAT_CLIENT_BIN) in line mode.

import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** web/tests. */
export const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** The server binary under test. */
export const serverBin = resolve(root, process.env.CHAT_SERVER_BIN ?? "../../target/debug/chat-server");
/** The console client binary. */
export const clientBin = resolve(root, process.env.CHAT_CLIENT_BIN ?? "../../target/debug/chat");

/** The admin token of test servers (for `POST /admin/broadcast`). */
export const ADMIN_TOKEN = "web-tests-admin-token";

/** A port nobody listens on right now. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/** One `chat-server` process, restartable on the same port with the same store. */
export class TestServer {
  /** @param {number} port @param {NodeJS.ProcessEnv} env @param {string} dataDir */
  constructor(port, env, dataDir) {
    /** The loopback port it listens on. */
    this.port = port;
    /** Its environment. */
    this.env = env;
    /** The SQLite folder, removed by `stop()`. */
    this.dataDir = dataDir;
    /** The process, while it runs. */
    this.child = undefined;
    /** What it printed (shown when it fails). */
    this.output = "";
  }

  /** Starts a server (extra `CHAT_*` settings in `env`) and waits until it is ready. */
  static async start(env = {}) {
    const dataDir = mkdtempSync(join(tmpdir(), "chat-web-tests-"));
    // Nothing inherited that the server could read as its configuration.
    const inherited = Object.entries(process.env).filter(([key]) => !key.startsWith("CHAT_") && key !== "RUST_LOG");
    const server = new TestServer(
      await freePort(),
      {
        ...Object.fromEntries(inherited),
        CHAT_STORE__URL: `sqlite://${join(dataDir, "chat.db")}`,
        CHAT_NOTIFICATIONS__ENABLED: "false",
        CHAT_ADMIN__TOKEN: ADMIN_TOKEN,
        CHAT_LOG__LEVEL: "warn",
        // The tests send and read history as fast as they can.
        CHAT_LIMITS__SEND_RATE: "0",
        CHAT_LIMITS__USER_SEND_RATE: "0",
        CHAT_SHUTDOWN__DRAIN_TIMEOUT: "2s",
        ...env,
      },
      dataDir,
    );
    await server.run();
    return server;
  }

  /** The page's address. */
  get http() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The WebSocket endpoint. */
  get ws() {
    return `ws://127.0.0.1:${this.port}/v1/ws`;
  }

  /** Starts the process and waits (bounded) for `/health/ready`. */
  async run() {
    this.output = "";
    const child = spawn(serverBin, ["--listen", `127.0.0.1:${this.port}`], { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    child.stdout.on("data", (chunk) => (this.output += chunk));
    child.stderr.on("data", (chunk) => (this.output += chunk));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`chat-server exited with ${child.exitCode}:\n${this.output}`);
      try {
        if ((await fetch(`${this.http}/health/ready`)).status === 200) return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new Error(`chat-server not ready within 30 s:\n${this.output}`);
      await sleep(25);
    }
  }

  /** Stops the process with SIGTERM (clients get SHUTTING_DOWN) and waits for it to exit. */
  async halt() {
    const child = this.child;
    this.child = undefined;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exited;
    clearTimeout(killer);
  }

  /** Stops the process and removes its data. */
  async stop() {
    await this.halt();
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A token signed with this server's settings (`chat-server token`). */
  token(sub, name) {
    const run = spawnSync(serverBin, ["token", "--sub", sub, "--name", name], { env: this.env, encoding: "utf8" });
    if (run.status !== 0) throw new Error(`chat-server token failed: ${run.stderr}`);
    return run.stdout.trim();
  }

  /** Sends a notification to every client (`POST /admin/broadcast`). */
  async broadcast(text) {
    const response = await fetch(`${this.http}/admin/broadcast`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ text }),
    });
    if (response.status !== 202) throw new Error(`broadcast answered ${response.status}: ${await response.text()}`);
  }
}

/** The `chat` console client in line mode (`--plain`): commands in, one line per event out. */
export class ConsoleClient {
  /** @param {import("node:child_process").ChildProcess} child */
  constructor(child) {
    /** The process. */
    this.child = child;
    /** Every line it printed. */
    this.lines = [];
    /** Waiters for a line, woken on each new one. */
    this.waiters = new Set();
    createInterface({ input: child.stdout }).on("line", (line) => {
      this.lines.push(line);
      for (const wake of [...this.waiters]) wake();
    });
    child.stderr.on("data", (chunk) => this.lines.push(`stderr: ${chunk}`));
  }

  /** Starts `chat --plain --name NAME --room ROOM… --server` against `server`. */
  static start(server, name, rooms) {
    const args = ["--plain", "--name", name, "--server", server.http, ...rooms.flatMap((r) => ["--room", r])];
    const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("CHAT_")));
    return new ConsoleClient(spawn(clientBin, args, { env, stdio: ["pipe", "pipe", "pipe"] }));
  }

  /** Sends one line (a message, or a /command). */
  say(line) {
    this.child.stdin.write(`${line}\n`);
  }

  /** Waits (bounded) for a printed line matching `pattern`, from index `from` on; returns it. */
  waitFor(pattern, from = 0, timeoutMs = 15_000) {
    return new Promise((resolveLine, reject) => {
      const check = () => {
        const found = this.lines.slice(from).find((line) => pattern.test(line));
        if (found === undefined) return false;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolveLine(found);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`chat printed no line matching ${pattern} within ${timeoutMs} ms:\n${this.lines.join("\n")}`));
      }, timeoutMs);
      if (!check()) this.waiters.add(check);
    });
  }

  /** Quits (`/quit`, then SIGKILL if it lingers) and waits for the exit. */
  async quit() {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.stdin.end("/quit\n");
    const killer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(killer);
  }
}

/** Why these tests cannot run here, if they cannot. */
export function missingBinaries() {
  for (const [bin, variable, build] of [
    [serverBin, "CHAT_SERVER_BIN", "cargo build -p chat-server --bin chat-server"],
    [clientBin, "CHAT_CLIENT_BIN", "cargo build -p chat-client --bin chat"],
  ]) {
    if (!existsSync(bin)) return `no binary at ${bin} (run \`${build}\` or set ${variable})`;
  }
  return undefined;
}

/** Waits `ms`. */
export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}
