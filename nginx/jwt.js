// Bearer-token check for the hypeman edge (njs 0.7.x, loaded with js_import).
//
// Two entry points over one verifier:
//   subject(r)  for `js_set` (direct mode): the token's `sub`, "-" when the token is valid
//               but has no subject, "" when the request has no valid token.
//   check(r)    for `js_content` (cached mode, the default): answers 204 with
//               X-Hypeman-Sub: <subject> and X-Accel-Expires: <seconds the verdict may be
//               cached, never past `exp`>, or 401. nginx caches the 204s (render.sh).
//
// Rules: scheme "bearer" in any case, one space, then exactly three non-empty dot-separated
// parts; the header must decode to alg exactly "HS256" (HS384/HS512/none/RS256... are
// rejected); the 32-byte HMAC-SHA256 signature under the bytes of env JWT_SECRET is compared in
// constant time and must be spelled canonically; `exp`, when present, must be a number > now;
// `nbf`, when present, a number <= now; `sub`, when present, must be a string without control
// characters. An empty JWT_SECRET rejects every token (and logs why).
//
// Cost: njs 0.7 clones its VM for every request that calls into this file and re-runs the
// top-level code in the clone, so the top level stays minimal. The header segment is first
// compared with the base64url of the usual HS256 headers (no decode, no JSON.parse), the MAC is
// compared as 32 bytes (a charCodeAt loop over the text costs several times more), and the
// payload is decoded only after the signature holds. Numbers: nginx/README.md.

const crypto = require('crypto');

const SECRET = process.env.JWT_SECRET || '';

// base64url of {"alg":"HS256","typ":"JWT"} as common libraries serialise it: the fast path.
const HS256_A = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9';      // {"alg":"HS256","typ":"JWT"}
const HS256_B = 'eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9';      // {"typ":"JWT","alg":"HS256"}
const HS256_C = 'eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9';  // {"alg": "HS256", "typ": "JWT"}
const HS256_D = 'eyJ0eXAiOiAiSldUIiwgImFsZyI6ICJIUzI1NiJ9';  // {"typ": "JWT", "alg": "HS256"}

// Offset of the token in "Bearer <token>" (scheme in any case, one space), or -1 when the
// header value is not of that form.
function tokenStart(auth) {
    if (auth.length < 8 || auth.charCodeAt(6) !== 32) {
        return -1;
    }
    const scheme = auth.substring(0, 6);
    if (scheme !== 'Bearer' && scheme.toLowerCase() !== 'bearer') {
        return -1;
    }
    return 7;
}

// base64url -> JSON object, or null (bad base64, bad JSON, or not an object).
function decodeJSON(segment) {
    try {
        const value = JSON.parse(Buffer.from(segment, 'base64url').toString());
        if (value === null || typeof value !== 'object' || Array.isArray(value)) {
            return null;
        }
        return value;
    } catch (e) {
        return null;
    }
}

function headerIsHS256(segment) {
    if (segment === HS256_A || segment === HS256_B || segment === HS256_C || segment === HS256_D) {
        return true;
    }
    const h = decodeJSON(segment);
    return h !== null && h.alg === 'HS256';
}

// The subject travels in a header and a FastCGI parameter: no control characters. Fast path:
// JSON escapes nothing (no control character, quote or backslash); the regex is the slow path.
function plainText(s) {
    return JSON.stringify(s).length === s.length + 2 || !/[\x00-\x1f\x7f]/.test(s);
}

// Longest time a verdict may be cached (seconds); render.sh keys the cache by worker pid.
const MAX_CACHE_SECONDS = 30;

// Verifies an Authorization header value; returns null or { sub, exp }.
function verify(auth) {
    if (SECRET === '' || auth === undefined) {
        return null;
    }
    const t = tokenStart(auth);
    if (t < 0) {
        return null;
    }
    // Exactly three non-empty parts; an HS256 signature is 32 bytes = 43 base64url characters.
    const d1 = auth.indexOf('.', t);
    const d2 = d1 < 0 ? -1 : auth.indexOf('.', d1 + 1);
    if (d1 <= t || d2 <= d1 + 1 || auth.length - d2 - 1 !== 43 || auth.indexOf('.', d2 + 1) !== -1) {
        return null;
    }
    if (!headerIsHS256(auth.substring(t, d1))) {
        return null;
    }

    // Signature: decode the given one, compute ours, compare all 32 bytes in constant time.
    const signature = auth.substring(d2 + 1);
    const given = Buffer.from(signature, 'base64url');
    if (given.length !== 32) {
        return null;
    }
    const mac = crypto.createHmac('sha256', SECRET).update(auth.substring(t, d2)).digest();
    var diff = 0;
    for (var i = 0; i < 32; i++) {
        diff |= mac[i] ^ given[i];
    }
    // The base64url decoder is lenient; once the bytes match (nothing secret is left to learn),
    // also require the canonical spelling so a token has exactly one valid form.
    if (diff !== 0 || mac.toString('base64url') !== signature) {
        return null;
    }

    const claims = decodeJSON(auth.substring(d1 + 1, d2));
    if (claims === null) {
        return null;
    }
    const now = Date.now() / 1000;
    const exp = claims.exp;
    if (exp !== undefined && !(typeof exp === 'number' && exp > now)) {
        return null;
    }
    const nbf = claims.nbf;
    if (nbf !== undefined && !(typeof nbf === 'number' && nbf <= now)) {
        return null;
    }
    var sub = claims.sub;
    if (sub === undefined || sub === '') {
        sub = '-';
    } else if (typeof sub !== 'string' || !plainText(sub)) {
        return null;
    }
    return { sub: sub, exp: exp, now: now };
}

function warnIfNoSecret(r) {
    if (SECRET === '') {
        r.error('hypeman auth: JWT_SECRET is empty in nginx\'s environment; every token is rejected');
    }
}

function subject(r) {
    const v = verify(r.headersIn.Authorization);
    if (v === null) {
        warnIfNoSecret(r);
        return '';
    }
    return v.sub;
}

function check(r) {
    const v = verify(r.headersIn.Authorization);
    if (v === null) {
        warnIfNoSecret(r);
        r.return(401);
        return;
    }
    var ttl = MAX_CACHE_SECONDS;
    if (v.exp !== undefined) {
        ttl = Math.min(ttl, Math.floor(v.exp - v.now));
    }
    r.headersOut['X-Hypeman-Sub'] = v.sub;
    r.headersOut['X-Accel-Expires'] = String(ttl > 0 ? ttl : 0);
    r.return(204);
}

export default { subject, check };
