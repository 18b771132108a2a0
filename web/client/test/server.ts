// A real `chat-server` for the integration tests: the binary named by
// CHAT_SERVER_BIN (default ../../target/debug/chat-server from web/client),
// started on a free loopback port with a memory or SQLite store and
// notifications off, waited for until ready, killed and started again on
// the same port for restart tests, and reaped at the end.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** web/client, from dist/test/. */
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The server binary under test. */
export const serverBin = resolve(root, process.env.CHAT_SERVER_BIN ?? "../../target/debug/chat-server");

/** A port nobody listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => (typeof address === "object" && address !== null ? resolvePort(address.port) : reject(new Error("no port"))));
    });
  });
}

/** How a test server runs. */
export interface ServerOptions {
  /** `memory` (default) or `sqlite` (a file in a temporary folder, kept across restarts). */
  store?: "memory" | "sqlite";
  /** More `CHAT_*` settings. */
  env?: Record<string, string>;
}

/** One `chat-server` process (restartable on the same port). */
export class TestServer {
  /** The process, while it runs. */
  private child: ChildProcess | undefined;
  /** What it printed, shown when it fails to start. */
  private output = "";
  /** The SQLite folder, removed at `stop()`. */
  private readonly dataDir: string | undefined;

  private constructor(
    /** The loopback port it listens on. */
    readonly port: number,
    /** Its environment. */
    private readonly env: NodeJS.ProcessEnv,
    dataDir: string | undefined,
  ) {
    this.dataDir = dataDir;
  }

  /** Starts a server on a free port and waits until it is ready. */
  static async start(options: ServerOptions = {}): Promise<TestServer> {
    const dataDir = options.store === "sqlite" ? mkdtempSync(join(tmpdir(), "chat-ts-it-")) : undefined;
    // Nothing inherited that the server could read as its configuration.
    const inherited = Object.entries(process.env).filter(([key]) => !key.startsWith("CHAT_") && key !== "RUST_LOG");
    const env: NodeJS.ProcessEnv = {
      ...Object.fromEntries(inherited),
      CHAT_STORE__URL: dataDir !== undefined ? `sqlite://${join(dataDir, "chat.db")}` : "memory",
      CHAT_NOTIFICATIONS__ENABLED: "false",
      CHAT_LOG__LEVEL: "warn",
      ...options.env,
    };
    const server = new TestServer(await freePort(), env, dataDir);
    await server.run();
    return server;
  }

  /** The WebSocket endpoint. */
  get url(): string {
    return `ws://127.0.0.1:${this.port}/v1/ws`;
  }

  /** The HTTP base address. */
  get http(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the process and waits (bounded) for `/health/ready`. */
  private async run(): Promise<void> {
    this.output = "";
    const child = spawn(serverBin, ["--listen", `127.0.0.1:${this.port}`], { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    child.stdout?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr?.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`chat-server exited with ${child.exitCode}:\n${this.output}`);
      try {
        const response = await fetch(`${this.http}/health/ready`);
        if (response.status === 200) return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new Error(`chat-server not ready within 30 s:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /**
   * Ends the process with `signal` (SIGKILL: no notice to clients;
   * SIGTERM: a graceful shutdown) and waits for it to exit.
   */
  async kill(signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
  }

  /** Ends the process (see `kill`) and starts it again on the same port (same store). */
  async restart(signal: "SIGKILL" | "SIGTERM" = "SIGKILL"): Promise<void> {
    await this.kill(signal);
    await this.run();
  }

  /** Stops the process and removes its data. */
  async stop(): Promise<void> {
    await this.kill();
    if (this.dataDir !== undefined) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** A token signed with this server's settings (`chat-server token`). */
  token(sub: string, name: string): string {
    const run = spawnSync(serverBin, ["token", "--sub", sub, "--name", name, "--ttl", "1h"], { env: this.env, encoding: "utf8" });
    if (run.status !== 0) throw new Error(`chat-server token failed: ${run.stderr}`);
    return run.stdout.trim();
  }
}

/** Why the integration tests cannot run here, if they cannot: no server binary. */
export function unavailable(): string | undefined {
  if (existsSync(serverBin)) return undefined;
  return `no chat-server binary at ${serverBin} (build it with \`cargo build -p chat-server --bin chat-server\` or set CHAT_SERVER_BIN)`;
}
