// Bundles src/main.ts into dist/app.js and copies the static files.
// Run through `npm run build`, which generates gen/ from ../proto first.
import { build } from "esbuild";
import { cp, mkdir, rm, access } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");

try {
  await access(join(root, "gen/chat/v1/chat_pb.ts"));
} catch {
  console.error("gen/chat/v1/chat_pb.ts is missing: run `npm run generate` (or `npm run build`) first");
  process.exit(1);
}

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

await build({
  entryPoints: [join(root, "src/main.ts")],
  outfile: join(dist, "app.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["es2020", "chrome90", "firefox90", "safari15"],
  minify: process.env.NODE_ENV !== "development",
  sourcemap: true,
  legalComments: "none",
  logLevel: "info",
});

for (const f of ["index.html", "style.css"]) {
  await cp(join(root, "static", f), join(dist, f));
}
console.log(`web: built ${dist}`);
