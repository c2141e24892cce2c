// hello, in JavaScript: the seed's Flask "Hello World!" app as a wasi:http
// component.
//
// Built with componentize-js (StarlingMonkey) against `wit/`
// (`guest/javascript/build.sh`). StarlingMonkey turns each call of
// wasi:http/incoming-handler into a web `fetch` event, and the global
// `fetch()` goes out through wasi:http/outgoing-handler. Each request runs in
// a fresh instance, so module-level state never carries over. Routes:
//
//   GET  /                 Hello World!
//   POST /echo             the request body, streamed back
//   GET  /fetch?url=URL    GET URL through wasi:http/outgoing-handler
//   anything else          404

const TEXT_PLAIN = "text/plain; charset=utf-8";

addEventListener("fetch", (event) => event.respondWith(route(event.request)));

async function route(request) {
  const url = new URL(request.url);
  const method = request.method;
  if (url.pathname === "/" && (method === "GET" || method === "HEAD")) {
    return hello();
  }
  if (url.pathname === "/echo" && method === "POST") {
    return echo(request);
  }
  if (url.pathname === "/fetch" && method === "GET") {
    return fetchUpstream(url.searchParams.get("url"));
  }
  return text(404, "Not Found\n");
}

// `GET /`: the page the seed's Flask app served.
function hello() {
  return text(200, "Hello World!");
}

// `POST /echo`: the body is streamed back as it arrives, never held whole.
function echo(request) {
  const contentType = request.headers.get("content-type") ?? "application/octet-stream";
  return new Response(request.body, {
    status: 200,
    headers: { "content-type": contentType },
  });
}

// `GET /fetch?url=URL`: answers `upstream <status>: <body>`, or 502 with the
// error when the request fails (for example because the host forbids it).
async function fetchUpstream(target) {
  if (!target) {
    return text(400, "missing ?url=\n");
  }
  try {
    const upstream = await fetch(target);
    const body = await upstream.text();
    return text(200, `upstream ${upstream.status}: ${body}`);
  } catch (error) {
    return text(502, `outbound error: ${error}\n`);
  }
}

function text(status, body) {
  const bytes = new TextEncoder().encode(body);
  return new Response(bytes, {
    status,
    headers: { "content-type": TEXT_PLAIN, "content-length": String(bytes.length) },
  });
}
