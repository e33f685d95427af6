// The Admin API's JSON routes, and nothing else. JSON is the protobuf JSON mapping with the
// proto field names; a field at its default value may be missing, so readers default it.

const TOKEN_KEY = "licensing.console.token";

/** An answer that was not 2xx: the HTTP status, the ErrorInfo reason and the message. */
export class ApiError extends Error {
  constructor(httpStatus, reason, message) {
    super(message);
    this.httpStatus = httpStatus;
    this.reason = reason;
  }

  /** "REASON: message", or the message alone when there is no reason. */
  describe() {
    return this.reason ? `${this.reason}: ${this.message}` : this.message;
  }
}

// The token lives in this tab's session storage only: never a URL, a cookie or a log.
export const token = {
  get() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(value) {
    sessionStorage.setItem(TOKEN_KEY, value);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

async function errorOf(response) {
  let reason = "";
  let message = `HTTP ${response.status} ${response.statusText}`.trim();
  try {
    const status = await response.json();
    if (typeof status.message === "string" && status.message) message = status.message;
    for (const detail of status.details || []) {
      if (String(detail["@type"] || "").endsWith("google.rpc.ErrorInfo") && detail.reason) {
        reason = detail.reason;
        break;
      }
    }
  } catch {
    // not a google.rpc.Status (a proxy's page): the HTTP status says enough
  }
  return new ApiError(response.status, reason, message);
}

async function call(method, path, { body, bearer } = {}) {
  const headers = { Accept: "application/json" };
  const secret = bearer ?? token.get();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
    });
  } catch {
    throw new ApiError(0, "UNREACHABLE", "the server could not be reached");
  }
  if (!response.ok) throw await errorOf(response);
  return response.json();
}

/** GET /api/license: GetStatusResponse. */
export const getStatus = () => call("GET", "/api/license");

/** PUT /api/license?dry-run=all: ValidateResponse (admin). */
export const validateLicense = (license, bearer) =>
  call("PUT", "/api/license?dry-run=all", { body: { license }, bearer });

/** PUT /api/license: UploadResponse (admin). */
export const uploadLicense = (license) => call("PUT", "/api/license", { body: { license } });

/** GET /api/license/usage: GetUsageHistoryResponse for the latest `days` days. */
export const getUsage = (days) => call("GET", `/api/license/usage?days=${days}`);

/** GET /api/license/usage for one day, with the instances that made up its peak. */
export const getDay = (day) =>
  call(
    "GET",
    `/api/license/usage?day=${encodeURIComponent(day)}&include_peak_instances=true`,
  );

/**
 * Which role a token has, without changing anything: a dry run of an empty license is a
 * verdict (200) for admin and a refusal (403) for anyone else; a control-plane token may
 * then read the status. Resolves "admin" or "control-plane"; rejects with an ApiError.
 */
export async function detectRole(bearer) {
  try {
    await validateLicense("", bearer);
    return "admin";
  } catch (error) {
    if (!(error instanceof ApiError) || error.httpStatus !== 403) throw error;
  }
  try {
    await call("GET", "/api/license", { bearer });
  } catch (error) {
    if (error instanceof ApiError && error.httpStatus === 403) {
      throw new ApiError(
        403,
        error.reason,
        "this token may not read the license (a gateway token?): sign in with an admin " +
          "or control-plane token",
      );
    }
    throw error;
  }
  return "control-plane";
}
