/**
 * A program built on the library with its defaults (no logger given): it
 * runs an agent, calls it, and prints the answer, its only output, on
 * stdout. Usage: library-program.ts <nats url> <tenant>
 */
import { connect, textOf } from "../../../core/index.js";

const [servers, tenant] = process.argv.slice(2);
const bus = await connect({ servers, tenant, insecureAllowAll: true });
await bus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `echo: ${ctx.text}` });
process.stdout.write(`${textOf(await bus.call("echo", "hi"))}\n`);
await bus.close();
