// The bundle's entry point (esbuild): boots the page. Everything else is in
// modules that do nothing at load, so that each can be built and tested alone.

import { boot } from "./boot";

boot(document, window);
