/**
 * Crypto micro-benchmark: what one message's authentication costs with each
 * Ed25519 implementation at hand, with HMAC-SHA256, with X25519 (the one-off
 * per-peer key agreement behind peer MACs), and with the project's whole
 * envelope seal + open in both modes, and end-to-end encrypted (seal +
 * encrypt, open + decrypt, for one recipient).
 *
 *   npx tsx bench/crypto/run.ts            # ~1 s per op
 *   BENCH_MS=300 npx tsx bench/crypto/run.ts
 *
 * Prints one JSON line on stdout; progress on stderr.
 */
import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  sign as nodeSign,
  verify as nodeVerify,
} from "node:crypto";
import nacl from "tweetnacl";
import { createUser, fromPublic } from "@nats-io/nkeys";
import { ed25519, x25519 } from "@noble/curves/ed25519.js";
import { Envelopes, Identity, type EnvelopeMeta } from "../../core/index.js";
import type { Received } from "../../core/security/envelope.js";
import { PeerKeys } from "../../core/security/peerkeys.js";
import { emit, progress, ratio, timeFor, type Rate } from "../lib.js";

const MS = Number(process.env.BENCH_MS ?? 1000);
const WARMUP_MS = Math.min(300, MS);
const enc = new TextEncoder();

// ~300-byte canonical input, shaped like the envelope's signed bytes:
// subject, sender, time, id, task/context/parent, depth, capability, error,
// then the body's SHA-256.
const sender = Identity.generate();
const receiver = Identity.generate();
const head = enc.encode(
  [
    `mesh.default.agent.${receiver.id}.call`,
    sender.id,
    String(Date.now()),
    "Vn2Xa9RkWfpQkD7d3jR0tC",
    "task-7f3c2a1e-5b8d-4c9e-a1f2-3b4c5d6e7f80",
    "ctx-0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5",
    "parent-11223344-5566-7788-99aa-bbccddeeff00",
    "1",
    "echo",
    "",
    "",
  ].join("\n"),
);
// Exactly 300 bytes: the head cut to 268, then the 32-byte body hash.
const input = new Uint8Array(Buffer.concat([head.subarray(0, 268), createHash("sha256").update(randomBytes(128)).digest()]));

const results: Record<string, Rate> = {};
function bench(name: string, fn: () => unknown, ms = MS): Rate {
  const r = timeFor(fn, ms, WARMUP_MS);
  results[name] = r;
  progress(`${name.padEnd(28)} ${String(r.opsPerSec).padStart(12)} ops/s ${String(r.usPerOp).padStart(10)} µs/op (${r.ops} ops)`);
  return r;
}

// --- Ed25519: tweetnacl (pure JS) ---
const naclKeys = nacl.sign.keyPair();
const naclSig = nacl.sign.detached(input, naclKeys.secretKey);
bench("tweetnacl.sign", () => nacl.sign.detached(input, naclKeys.secretKey));
bench("tweetnacl.verify", () => nacl.sign.detached.verify(input, naclSig, naclKeys.publicKey));

// --- Ed25519: @nats-io/nkeys KeyPair (wraps tweetnacl) ---
const nk = createUser();
const nkPublic = fromPublic(nk.getPublicKey());
const nkSig = nk.sign(input);
bench("nkeys.sign", () => nk.sign(input));
bench("nkeys.verify", () => nkPublic.verify(input, nkSig));

// --- Ed25519: node:crypto (OpenSSL), KeyObjects created once ---
const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const nodeSig = nodeSign(null, input, privateKey);
bench("node.sign", () => nodeSign(null, input, privateKey));
bench("node.verify", () => nodeVerify(null, input, publicKey, nodeSig));

// --- HMAC-SHA256 over the same input (node:crypto) ---
const macKey = randomBytes(32);
bench("hmac.sha256", () => createHmac("sha256", macKey).update(input).digest());

// --- X25519 key agreement: the one-off cost per new peer ---
// noble: what core/security/peerkeys.ts does (Ed25519 public key -> Montgomery, then DH).
const senderMont = ed25519.utils.toMontgomerySecret(sender.rawSeed());
const receiverEd = receiver.publicKey;
bench("x25519.noble", () => x25519.getSharedSecret(senderMont, ed25519.utils.toMontgomery(receiverEd)));
// node:crypto X25519 with ready KeyObjects, for comparison.
const xa = generateKeyPairSync("x25519");
const xb = generateKeyPairSync("x25519");
bench("x25519.node", () => diffieHellman({ privateKey: xa.privateKey, publicKey: xb.publicKey }));
// A node:crypto drop-in for core/security/peerkeys.ts: noble only for the Ed25519 ->
// Montgomery map of the peer's public key, then SPKI import + OpenSSL X25519.
const X25519_PKCS8 = Buffer.from("302e020100300506032b656e04220420", "hex");
const X25519_SPKI = Buffer.from("302a300506032b656e032100", "hex");
const senderX = createPrivateKey({ key: Buffer.concat([X25519_PKCS8, senderMont]), format: "der", type: "pkcs8" });
bench("x25519.node.fromEdPublic", () =>
  diffieHellman({
    privateKey: senderX,
    publicKey: createPublicKey({ key: Buffer.concat([X25519_SPKI, ed25519.utils.toMontgomery(receiverEd)]), format: "der", type: "spki" }),
  }),
);
// The project's full per-peer derivation (new PeerKeys each time, so no cache:
// includes the seed -> Montgomery conversion, nkey decode, DH and HKDF).
bench("peerkey.derive", () => new PeerKeys(sender).keyFor(receiver.id));

// --- The project's envelope, 128-byte body, both modes ---
const subject = "mesh.default.cap.echo";
const frame = (text: string) => JSON.stringify({ messageId: "7f3c2a1e-5b8d-4c9e-a1f2-3b4c5d6e7f80", role: "ROLE_USER", parts: [{ text }] });
const body128 = enc.encode(frame("x".repeat(128 - frame("").length)));
const meta: EnvelopeMeta = { trace: { traceparent: `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01` } };
const sealer = new Envelopes(sender);
const recipients = [receiver.id];

/**
 * Open measured on a pool of sealed messages (each id may be opened once:
 * the replay guard). When the pool wraps a fresh opener is used; its first
 * open pays one X25519 derivation, amortized over the pool (~0.05 µs/op).
 */
function openBench(name: string, rcpt: string[] | undefined): Rate {
  const pool: Received[] = [];
  for (let i = 0; i < 20_000; i++) pool.push({ subject, data: body128, headers: sealer.seal(subject, body128, meta, rcpt) });
  let opener = new Envelopes(receiver);
  opener.open({ subject, data: body128, headers: sealer.seal(subject, body128, meta, rcpt) });
  let i = 0;
  return bench(name, () => {
    if (i === pool.length) {
      i = 0;
      opener = new Envelopes(receiver);
    }
    return opener.open(pool[i++]!);
  });
}

let opener = new Envelopes(receiver);
let opened = 0;
const sealOpen = (rcpt: string[] | undefined) => () => {
  // Fresh replay memory every 100k messages keeps the guard's sets bounded as in real traffic.
  if (++opened === 100_000) {
    opened = 0;
    opener = new Envelopes(receiver);
  }
  return opener.open({ subject, data: body128, headers: sealer.seal(subject, body128, meta, rcpt) });
};

bench("envelope.sig.seal", () => sealer.seal(subject, body128, meta));
openBench("envelope.sig.open", undefined);
bench("envelope.sig.sealOpen", sealOpen(undefined));
bench("envelope.mac.seal", () => sealer.seal(subject, body128, meta, recipients));
openBench("envelope.mac.open", recipients);
bench("envelope.mac.sealOpen", sealOpen(recipients));

// --- End-to-end encrypted (MACed, one recipient): seal + encrypt, open + decrypt ---
const sealEnc = () => sealer.sealEncrypted(subject, body128, recipients, meta, recipients);
bench("envelope.enc.seal", sealEnc);
{
  const pool = Array.from({ length: 20_000 }, sealEnc);
  let opener = new Envelopes(receiver);
  const first = sealEnc();
  opener.decrypt(opener.open({ subject, data: first.body, headers: first.headers }), first.body);
  let i = 0;
  bench("envelope.enc.open", () => {
    if (i === pool.length) {
      i = 0;
      opener = new Envelopes(receiver);
    }
    const m = pool[i++]!;
    return opener.decrypt(opener.open({ subject, data: m.body, headers: m.headers }), m.body);
  });
}
let encOpener = new Envelopes(receiver);
let encOpened = 0;
bench("envelope.enc.sealOpen", () => {
  if (++encOpened === 100_000) {
    encOpened = 0;
    encOpener = new Envelopes(receiver);
  }
  const m = sealEnc();
  return encOpener.decrypt(encOpener.open({ subject, data: m.body, headers: m.headers }), m.body);
});

const r = (k: string): number => results[k]!.opsPerSec;
const ratios = {
  node_vs_tweetnacl_sign: ratio(r("node.sign"), r("tweetnacl.sign"), 1),
  node_vs_tweetnacl_verify: ratio(r("node.verify"), r("tweetnacl.verify"), 1),
  node_vs_nkeys_sign: ratio(r("node.sign"), r("nkeys.sign"), 1),
  node_vs_nkeys_verify: ratio(r("node.verify"), r("nkeys.verify"), 1),
  hmac_vs_node_sign: ratio(r("hmac.sha256"), r("node.sign"), 1),
  hmac_vs_node_verify: ratio(r("hmac.sha256"), r("node.verify"), 1),
  x25519_node_vs_noble: ratio(r("x25519.node"), r("x25519.noble"), 1),
  peerkey_node_dropin_vs_noble: ratio(r("x25519.node.fromEdPublic"), r("peerkey.derive"), 1),
  mac_vs_signature_envelope: ratio(r("envelope.mac.sealOpen"), r("envelope.sig.sealOpen"), 2),
  mac_vs_signature_seal: ratio(r("envelope.mac.seal"), r("envelope.sig.seal"), 2),
  mac_vs_signature_open: ratio(r("envelope.mac.open"), r("envelope.sig.open"), 2),
  encrypted_vs_mac_envelope: ratio(r("envelope.enc.sealOpen"), r("envelope.mac.sealOpen"), 2),
};

emit({
  bench: "crypto",
  node: process.version,
  inputBytes: input.length,
  bodyBytes: body128.length,
  msPerOp: MS,
  results,
  ratios,
  choice: "node:crypto Ed25519 for signatures; HMAC peer keys on the per-message path",
});
