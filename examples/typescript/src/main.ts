// A TypeScript client of LicenseService: every RPC once, with a bearer token, over gRPC.
//
//   LICENSING_SERVER=127.0.0.1:7443 LICENSING_TOKEN=s3cret npm start -- license.jws
//
// The code under src/gen/ is generated from protos/ (ours and the vendored google.rpc) by
// `npm run generate`; nothing here is written by hand but this file.

import { readFileSync } from "node:fs";

import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { LicenseService, Operation, RuntimeState } from "./gen/licensing/v1/licensing_pb.js";

const server = process.env.LICENSING_SERVER ?? "127.0.0.1:7443";
const token = process.env.LICENSING_TOKEN ?? "";
const licensePath = process.argv[2];
if (licensePath === undefined) {
  console.error("usage: npm start -- LICENSE_FILE (with LICENSING_SERVER and LICENSING_TOKEN)");
  process.exit(2);
}
const licenseText = readFileSync(licensePath, "utf8");

// the seed's `authorization: Bearer <token>` header, on every call
const bearer: Interceptor = (next) => async (request) => {
  request.header.set("authorization", `Bearer ${token}`);
  return await next(request);
};

const client = createClient(
  LicenseService,
  createGrpcTransport({ baseUrl: `http://${server}`, interceptors: [bearer] }),
);

function stateName(state: RuntimeState): string {
  return RuntimeState[state] ?? String(state);
}

function iso(time: Timestamp | undefined): string {
  return time === undefined ? "-" : timestampDate(time).toISOString();
}

// An error carries a google.rpc.ErrorInfo in its status details; its reason is the stable code.
function describeError(error: unknown): string {
  const failure = ConnectError.from(error);
  const [info] = failure.findDetails(ErrorInfoSchema);
  const reason = info === undefined ? "no ErrorInfo" : `${info.reason} (domain ${info.domain})`;
  return `${Code[failure.code]}: ${reason}: ${failure.rawMessage}`;
}

function say(rpc: string, text: string): void {
  console.log(`${rpc.padEnd(18)}${text}`);
}

const status = await client.getStatus({});
say("GetStatus", `deployment ${status.deploymentId}, state ${stateName(status.state)}`);

const verdict = await client.validate({ license: licenseText });
say("Validate", `valid ${verdict.valid}, would lead to ${stateName(verdict.resultingState)}`);

const uploaded = await client.upload({ license: licenseText });
const serial = uploaded.license?.serialNumber ?? "-";
say("Upload", `${serial} in force until ${iso(uploaded.license?.endTime)}`);

try {
  await client.upload({ license: "not a license" });
  say("Upload", "UNEXPECTED: a bad license was accepted");
  process.exitCode = 1;
} catch (error) {
  say("Upload", `rejected, ${describeError(error)}`);
}

const report = await client.reportUsage({ instanceId: "ts-gateway-1", cores: 2 });
say("ReportUsage", `state ${stateName(report.state)}, received ${iso(report.receiveTime)}`);

const decision = await client.checkWrite({ resourceType: "route", operation: Operation.CREATE });
say("CheckWrite", `create route: allowed ${decision.allowed}, ${decision.message}`);

const history = await client.getUsageHistory({ days: 7 });
const newest = history.days[0];
say(
  "GetUsageHistory",
  newest === undefined
    ? "no evaluated day yet"
    : `${history.days.length} days, newest ${newest.day}: peak ${newest.peakCores} cores`,
);

// every instance of a day's peak, a page at a time (AIP-158)
const day = newest?.day ?? new Date().toISOString().slice(0, 10);
try {
  let pageToken = "";
  let instances = 0;
  do {
    const page = await client.listPeakInstances({ day, pageSize: 100, pageToken });
    instances += page.instances.length;
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  say("ListPeakInstances", `${day}: ${instances} instances at the peak`);
} catch (error) {
  say("ListPeakInstances", `${day}: ${describeError(error)}`);
}

// the decision table pushed as it changes: take the stream's first message, then hang up
try {
  const watching = new AbortController();
  for await (const message of client.watchEnforcement({}, { signal: watching.signal })) {
    const snapshot = message.snapshot;
    say(
      "WatchEnforcement",
      `version ${snapshot?.version ?? 0}: ${stateName(snapshot?.state ?? RuntimeState.UNSPECIFIED)}`,
    );
    watching.abort();
    break;
  }
} catch (error) {
  say("WatchEnforcement", describeError(error));
}
