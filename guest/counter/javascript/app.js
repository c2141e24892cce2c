// hello-counter, in JavaScript: "Hello World!" with a visit counter in
// wasi:keyvalue.
//
// The step after the seed's Flask hello (Flask + Redis: "Hello World! I have
// been seen N times."), as a wasi:http component built with componentize-js
// against `wit/`'s `wasmlet:handler/keyvalue-handler` world
// (`guest/counter/javascript/build.sh`). Routes:
//
//   GET /          Hello World!
//   GET /count     adds one to key `hits` (atomics.increment) and answers
//                  Hello World! I have been seen N times.
//   anything else  404 (405 for another method on / or /count)
//
// It opens the store named "": `wasmtime serve -Skeyvalue`'s one store, and
// the route's `default` store under wasmlet. A store error is answered with
// 503. WIT imports are ES modules named by interface; a `result` error is
// thrown, with the WIT error variant as its `payload`.

import { open } from "wasi:keyvalue/store@0.2.0-draft";
import { increment } from "wasi:keyvalue/atomics@0.2.0-draft";

const TEXT_PLAIN = "text/plain; charset=utf-8";
// The store: "" is `wasmtime serve -Skeyvalue`'s one store, wasmlet's `default`.
const STORE = "";
// The key counted, as in the Flask + Redis tutorial (`redis.incr('hits')`).
const HITS = "hits";

addEventListener("fetch", (event) => event.respondWith(route(event.request)));

function route(request) {
  const path = new URL(request.url).pathname;
  const method = request.method;
  if (path === "/" && (method === "GET" || method === "HEAD")) {
    return text(200, "Hello World!");
  }
  if (path === "/count" && method === "GET") {
    return count();
  }
  if (path === "/" || path === "/count") {
    return text(405, "Method Not Allowed\n", { allow: path === "/" ? "GET, HEAD" : "GET" });
  }
  return text(404, "Not Found\n");
}

// `GET /count`: one more visit, counted atomically by the store.
function count() {
  let hits;
  try {
    const bucket = open(STORE);
    // u64 in WIT is a BigInt in JavaScript.
    hits = increment(bucket, HITS, 1n);
  } catch (error) {
    const detail = error.payload ? JSON.stringify(error.payload) : String(error);
    return text(503, `key-value store error: ${detail}\n`);
  }
  return text(200, `Hello World! I have been seen ${hits} times.`);
}

function text(status, body, headers = {}) {
  const bytes = new TextEncoder().encode(body);
  return new Response(bytes, {
    status,
    headers: { ...headers, "content-type": TEXT_PLAIN, "content-length": String(bytes.length) },
  });
}
