// Talking to the model server through the public REST API every client uses: the V2 repository
// index (POST /v2/repository/index) for the models to pick from, then TF Serving's API:
// GET /v1/models/{name} for the status, POST /v1/models/{name}:predict for the answer. Failures
// become a ServerProblem: a message for a person, and whether it passes by itself.

const REQUEST_TIMEOUT_MS = 10000;

/** What went wrong with a request, in words for a person. */
export class ServerProblem extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind; // "unreachable" | "unavailable" | "busy" | "refused" | "unexpected"
  }

  /** Whether waiting may mend it (the page retries on its own once the server is back). */
  get transient() {
    return ["unreachable", "unavailable", "busy"].includes(this.kind);
  }
}

export class ModelServer {
  /** `config`: what the server told the page (default model, paths, tensor names, sizes). */
  constructor(config) {
    this.config = config;
    this.model = config.model; // the model asked; the picker changes it
  }

  get path() {
    return `${this.config.modelsPrefix}/${encodeURIComponent(this.model)}`;
  }

  /**
   * The names of the models the server has ready (its V2 repository index, one row per model
   * version), the page's default first if the index lacks it; `fromIndex` false when the server
   * could not say (an older server without the index): then only the default.
   */
  async models() {
    const fallback = { names: [this.config.model], fromIndex: false };
    let rows;
    try {
      rows = await this.call(this.config.repositoryIndex, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ready: true }),
      });
    } catch (error) {
      if (!(error instanceof ServerProblem)) throw error;
      return fallback;
    }
    if (!Array.isArray(rows)) return fallback;
    const ready = rows.filter((row) => row && typeof row.name === "string" && row.state === this.config.readyState);
    const names = [...new Set(ready.map((row) => row.name))];
    if (!names.includes(this.config.model)) names.unshift(this.config.model);
    return { names, fromIndex: true };
  }

  /** The version that answers unversioned requests: the highest AVAILABLE one. */
  async servedVersion() {
    const status = await this.call(this.path);
    const available = (status.model_version_status || [])
      .filter((row) => row.state === "AVAILABLE")
      .map((row) => Number(row.version));
    if (!available.length) {
      throw new ServerProblem(
        "unavailable",
        `The model ${this.model} has no available version yet. Waiting for it…`,
      );
    }
    return Math.max(...available);
  }

  /** One image (size x size, row-major, [0, 1]) -> { probabilities, digit, milliseconds }. */
  async predict(pixels) {
    const { config } = this;
    const size = config.imageSize;
    const rows = [];
    for (let y = 0; y < size; y++) {
      rows.push(Array.from(pixels.subarray(y * size, (y + 1) * size), (v) => [v]));
    }
    const body = JSON.stringify({ signature_name: config.signature, instances: [{ [config.input]: rows }] });
    const started = performance.now();
    const reply = await this.call(`${this.path}:predict`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
    const milliseconds = performance.now() - started;
    const row = reply.predictions && reply.predictions[0];
    const probabilities = row && row[config.outputs.probabilities];
    if (!Array.isArray(probabilities) || probabilities.length !== config.classes) {
      throw new ServerProblem("unexpected", `The server's answer has no ${config.classes} probabilities.`);
    }
    return { probabilities, digit: row[config.outputs.digit], milliseconds };
  }

  async call(path, options = {}) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    let response;
    try {
      response = await fetch(path, { ...options, signal: abort.signal, cache: "no-store" });
    } catch {
      throw new ServerProblem(
        "unreachable",
        `Cannot reach the model server at ${location.origin}. Retrying every few seconds…`,
      );
    } finally {
      clearTimeout(timer);
    }
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON (a proxy's error page?): said below by its status.
    }
    if (response.ok && body) return body;
    const said = body && typeof body.error === "string" ? body.error : response.statusText;
    const status = `HTTP ${response.status}`;
    // 503: no version loaded yet (predict); 404 on the status: no version directory yet.
    if (response.status === 503 || (response.status === 404 && options.method !== "POST")) {
      throw new ServerProblem(
        "unavailable",
        `The model ${this.model} is not available yet (${status}: ${said}). Waiting for it…`,
      );
    }
    if (response.status === 429) {
      throw new ServerProblem("busy", `The server is busy (${status}: ${said}). Retrying…`);
    }
    if (response.ok) throw new ServerProblem("unexpected", "The server answered something that is not JSON.");
    throw new ServerProblem("refused", `The server refused the request (${status}): ${said}`);
  }
}
