/**
 * Chromium for page tests: Debian's /usr/bin/chromium driven by
 * playwright-core (no downloaded browser). Tests that need it are skipped,
 * with a warning, where it is missing.
 *
 * @example
 * const browser = useBrowser("console page");
 * it.skipIf(!hasChromium)("shows the agents", async () => {
 *   const { page, errors } = await openPage(browser(), `${url}/monitor/`);
 * });
 */
import { existsSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";
import type { Browser, Page } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";
export const hasChromium = existsSync(CHROMIUM);

/** Launches Chromium once for this test file (when it is installed) and closes it after. */
export function useBrowser(what: string): () => Browser {
  if (!hasChromium) console.warn(`${what} tests skipped: no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
  let browser: Browser | undefined;
  beforeAll(async () => {
    if (!hasChromium) return;
    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  });
  afterAll(async () => {
    await browser?.close();
  });
  return () => {
    if (!browser) throw new Error("Chromium is not running: use it inside a test");
    return browser;
  };
}

/**
 * A new page at `url` that records its uncaught errors (thrown, or promises
 * rejected unhandled) and the errors its console reports (failed loads,
 * Content-Security-Policy refusals).
 */
export async function openPage(browser: Browser, url: string, viewport = { width: 1280, height: 800 }): Promise<{ page: Page; errors: string[]; consoleErrors: string[] }> {
  const page = await browser.newPage({ viewport });
  const errors: string[] = [];
  const consoleErrors: string[] = [];
  page.on("pageerror", (err) => errors.push(String(err)));
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(`${m.text()} (${m.location().url})`);
  });
  await page.goto(url);
  return { page, errors, consoleErrors };
}

/** Where page screenshots go: `test-results/<folder>/` of the repository. */
export function screenshotDir(folder: string): string {
  const dir = fileURLToPath(new URL(`../../test-results/${folder}/`, import.meta.url));
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Saves the whole page as `test-results/<folder>/<name>.png`; returns the path. */
export async function screenshot(page: Page, folder: string, name: string): Promise<string> {
  const path = join(screenshotDir(folder), `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  return path;
}
