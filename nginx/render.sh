#!/usr/bin/env bash
# Renders the hypeman nginx edge configuration into OUT_DIR.
#
#   nginx/render.sh OUT_DIR
#   JWT_SECRET=... nginx -p OUT_DIR -c nginx.conf -e OUT_DIR/error.log
#
# Files written (all absolute paths, so they can be included from anywhere):
#   nginx.conf              standalone main config (load_module, env, pid, temp paths, http {})
#   hypeman-http.conf       http-context part: upstreams, maps, the Perl auth module, servers.
#                           This is the file a Debian install links into /etc/nginx/sites-enabled.
#   hypeman-locations.conf  the locations, shared by the HTTP and the TLS server
#   hypeman-fastcgi.conf    FastCGI parameters common to every app location
#   hypeman-auth.conf       the bearer check (401 JSON) included by protected locations
#   hypeman-main.conf       main-context lines a Debian install needs (env JWT_SECRET, the
#                           token lifetime bound)
#   hypeman-bench-*.conf    only with HYPEMAN_BENCH=1 (removed otherwise): the /_bench/*
#                           locations, among them the API without auth under /_bench/noauth/
#
# Inputs (environment):
#   HYPEMAN_RUN_DIR        required; holds fcgi-0.sock .. fcgi-(N-1).sock
#   HYPEMAN_FCGI_WORKERS   N, default 2
#   HYPEMAN_EXEC_SOCKET    the Provisioner's exec WebSocket gateway, default RUN_DIR/exec.sock
#   HYPEMAN_HTTP_LISTEN    default 127.0.0.1:8080; set to "" for no plain-HTTP server
#   HYPEMAN_HTTPS_LISTEN   default "" (no TLS server); needs HYPEMAN_TLS_CERT, HYPEMAN_TLS_KEY
#   HYPEMAN_SHARE_DIR      default: the repository root (parent of this script's folder);
#                          nginx/HypemanAuth.pm and openapi/openapi.yaml are read from it
#   HYPEMAN_BENCH          0 (default) or 1: add the /_bench/* locations (the API without auth
#                          under /_bench/noauth/): refused unless every listen address is
#                          loopback (127.0.0.0/8, [::1], localhost)
#   HYPEMAN_NGINX_WORKERS  worker_processes, default auto
#   HYPEMAN_ACCESS_LOG     path of an access log; default off
#   HYPEMAN_MAX_ARCHIVE    body limit of POST /volumes[/from-archive], default 4g
#   HYPEMAN_MAX_BODY       body limit elsewhere, default 1m
#   HYPEMAN_NGINX_STATE_DIR  pid file and temp files; default OUT_DIR
#   HYPEMAN_AUTH_CACHE     1 (default): each nginx worker remembers a verified token for up
#                          to 30 s (never past its exp) in the memory of its Perl interpreter,
#                          so the signature is checked once per worker instead of on every
#                          request. 0: every request is verified. Same rules either way.
#   HYPEMAN_NGINX_USER     the user nginx's workers run as when started as root; default nobody
#   HYPEMAN_SOCKET_GROUP   the group that may connect to the app's sockets (0660 in a 0750 run
#                          directory), default hypeman: the workers run with it as their group
#                          ("user NGINX_USER GROUP;"); it must exist
#   HYPEMAN_MAX_TOKEN_TTL  longest lifetime of a bearer token (exp - iat, and exp - now): seconds
#                          or a number with s, m, h or d; default 30d. Tokens without exp are
#                          always rejected.
set -euo pipefail

die() { echo "render.sh: $*" >&2; exit 2; }

[ $# -eq 1 ] || die "usage: render.sh OUT_DIR"

script_dir=$(cd "$(dirname "$0")" && pwd)

# Values are pasted into nginx syntax: refuse anything that could end a directive or a block.
check_plain() { # name value
    case "$2" in
        *[\;\{\}\"\'\`\$\\]* | *[[:space:]]*) die "$1 must not contain whitespace, quotes, ';', '{', '}', '\$' or '\\': '$2'" ;;
    esac
}
check_listen() { # listen values may carry parameters separated by single spaces
    case "$2" in
        *[\;\{\}\"\'\`\$\\]*) die "$1 must not contain quotes, ';', '{', '}', '\$' or '\\': '$2'" ;;
    esac
    case "$2" in *$'\n'* | *$'\t'*) die "$1 must be one line" ;; esac
}
absolute() { # name value
    case "$2" in /*) ;; *) die "$1 must be an absolute path: '$2'" ;; esac
    check_plain "$1" "$2"
}
size_value() { # name value
    [[ "$2" =~ ^[0-9]+[kKmMgG]?$ ]] || die "$1 must be a size like 1m or 4g: '$2'"
}

mkdir -p "$1"
out=$(cd "$1" && pwd)
absolute OUT_DIR "$out"

run_dir=${HYPEMAN_RUN_DIR:-}
[ -n "$run_dir" ] || die "HYPEMAN_RUN_DIR is required (the directory holding fcgi-N.sock)"
absolute HYPEMAN_RUN_DIR "$run_dir"

workers=${HYPEMAN_FCGI_WORKERS:-2}
[[ "$workers" =~ ^[0-9]+$ ]] && [ "$workers" -ge 1 ] && [ "$workers" -le 256 ] \
    || die "HYPEMAN_FCGI_WORKERS must be an integer 1..256: '$workers'"

http_listen=${HYPEMAN_HTTP_LISTEN-127.0.0.1:8080}
https_listen=${HYPEMAN_HTTPS_LISTEN:-}
[ -n "$http_listen" ] || [ -n "$https_listen" ] || die "both HYPEMAN_HTTP_LISTEN and HYPEMAN_HTTPS_LISTEN are empty"
check_listen HYPEMAN_HTTP_LISTEN "$http_listen"
check_listen HYPEMAN_HTTPS_LISTEN "$https_listen"
tls_cert=${HYPEMAN_TLS_CERT:-}
tls_key=${HYPEMAN_TLS_KEY:-}
if [ -n "$https_listen" ]; then
    [ -n "$tls_cert" ] && [ -n "$tls_key" ] || die "HYPEMAN_HTTPS_LISTEN needs HYPEMAN_TLS_CERT and HYPEMAN_TLS_KEY"
    absolute HYPEMAN_TLS_CERT "$tls_cert"
    absolute HYPEMAN_TLS_KEY "$tls_key"
fi

share_dir=${HYPEMAN_SHARE_DIR:-$(dirname "$script_dir")}
absolute HYPEMAN_SHARE_DIR "$share_dir"
[ -f "$share_dir/nginx/HypemanAuth.pm" ] || die "$share_dir/nginx/HypemanAuth.pm not found (set HYPEMAN_SHARE_DIR)"
openapi="$share_dir/openapi/openapi.yaml"
# The bearer check runs in nginx's embedded Perl and decodes JSON with JSON::XS.
[ -f /usr/lib/nginx/modules/ngx_http_perl_module.so ] \
    || die "nginx's Perl module is missing: apt-get install libnginx-mod-http-perl"
perl -MJSON::XS -MDigest::SHA -MMIME::Base64 -e 1 2>/dev/null \
    || die "Perl's JSON::XS is missing: apt-get install libjson-xs-perl"

bench=${HYPEMAN_BENCH:-0}
case "$bench" in 0 | 1) ;; *) die "HYPEMAN_BENCH must be 0 or 1: '$bench'" ;; esac

nginx_workers=${HYPEMAN_NGINX_WORKERS:-auto}
[[ "$nginx_workers" =~ ^([0-9]+|auto)$ ]] || die "HYPEMAN_NGINX_WORKERS must be a number or auto: '$nginx_workers'"

access_log=${HYPEMAN_ACCESS_LOG:-}
if [ -n "$access_log" ]; then absolute HYPEMAN_ACCESS_LOG "$access_log"; fi

max_archive=${HYPEMAN_MAX_ARCHIVE:-4g}
size_value HYPEMAN_MAX_ARCHIVE "$max_archive"
max_body=${HYPEMAN_MAX_BODY:-1m}
size_value HYPEMAN_MAX_BODY "$max_body"

state_dir=${HYPEMAN_NGINX_STATE_DIR:-$out}
absolute HYPEMAN_NGINX_STATE_DIR "$state_dir"

auth_cache=${HYPEMAN_AUTH_CACHE:-1}
case "$auth_cache" in 0 | 1) ;; *) die "HYPEMAN_AUTH_CACHE must be 0 or 1: '$auth_cache'" ;; esac
exec_sock=${HYPEMAN_EXEC_SOCKET:-$run_dir/exec.sock}
check_plain HYPEMAN_EXEC_SOCKET "$exec_sock"

nginx_user=${HYPEMAN_NGINX_USER:-nobody}
check_plain HYPEMAN_NGINX_USER "$nginx_user"
socket_group=${HYPEMAN_SOCKET_GROUP:-hypeman}
check_plain HYPEMAN_SOCKET_GROUP "$socket_group"
getent group "$socket_group" >/dev/null \
    || die "group '$socket_group' (HYPEMAN_SOCKET_GROUP) does not exist: create it with 'groupadd --system $socket_group' (systemd/README.md); nginx's workers need it to reach the app's sockets"

# HYPEMAN_MAX_TOKEN_TTL in seconds: N, Ns, Nm, Nh or Nd, 1 s to 3650 d.
max_ttl_text=${HYPEMAN_MAX_TOKEN_TTL:-30d}
[[ "$max_ttl_text" =~ ^([0-9]{1,12})([smhd]?)$ ]] || die "HYPEMAN_MAX_TOKEN_TTL must be seconds or a number with s, m, h or d (like 30d): '$max_ttl_text'"
case "${BASH_REMATCH[2]}" in m) unit=60 ;; h) unit=3600 ;; d) unit=86400 ;; *) unit=1 ;; esac
max_ttl=$((10#${BASH_REMATCH[1]} * unit))
[ "$max_ttl" -ge 1 ] && [ "$max_ttl" -le $((3650 * 86400)) ] || die "HYPEMAN_MAX_TOKEN_TTL must be between 1s and 3650d: '$max_ttl_text'"

# Bench mode serves the API without auth: only ever on loopback listeners.
is_loopback_listen() { # a listen value: its address part must be loopback
    local addr=${1%% *}
    case "$addr" in
        localhost | localhost:[0-9]* | \[::1\] | \[::1\]:[0-9]*) return 0 ;;
    esac
    [[ "$addr" =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(:[0-9]+)?$ ]]
}
if [ "$bench" = 1 ]; then
    for listen in "$http_listen" "$https_listen"; do
        [ -z "$listen" ] || is_loopback_listen "$listen" \
            || die "HYPEMAN_BENCH=1 serves the API without auth: refused with the non-loopback listen '$listen' (use 127.0.0.1, [::1] or localhost)"
    done
fi

# Workers run as nobody when nginx starts as root: they must be able to traverse these.
mkdir -p "$state_dir/tmp"
chmod 0755 "$out" "$state_dir" "$state_dir/tmp"

write() { # file: content from stdin, replaced atomically
    cat >"$out/$1.tmp"
    mv -f "$out/$1.tmp" "$out/$1"
}

# ---------------------------------------------------------------------------------------------
write hypeman-main.conf <<EOF
# Main-context lines for hypeman (rendered by nginx/render.sh; do not edit).
# nginx clears its workers' environment; HypemanAuth.pm reads the HMAC key from JWT_SECRET.
env JWT_SECRET;
# The longest token lifetime HypemanAuth.pm accepts, in seconds (HYPEMAN_MAX_TOKEN_TTL).
env HYPEMAN_MAX_TOKEN_TTL=$max_ttl;
# The bearer-shape map is a regex on every protected request: JIT makes it ~4 us cheaper.
pcre_jit on;
EOF

# ---------------------------------------------------------------------------------------------
write hypeman-fastcgi.conf <<EOF
# FastCGI parameters common to every hypeman app location (rendered by nginx/render.sh).
# A location including this file defines HTTP_X_AUTH_SUBJECT itself.
include /etc/nginx/fastcgi_params;
# Debian's fastcgi_params already passes REQUEST_URI as the raw \$request_uri; the app
# decodes path segments itself.
fastcgi_param HTTP_X_REQUEST_ID \$request_id;
# Setting these replaces the client's header of the same name: the bearer token never
# reaches the app, and a client cannot inject httpoxy's HTTP_PROXY.
fastcgi_param HTTP_AUTHORIZATION "";
fastcgi_param HTTP_PROXY "";
fastcgi_pass hypeman_fcgi;
EOF

# ---------------------------------------------------------------------------------------------
{
    cat <<EOF
# Bearer JWT check (rendered by nginx/render.sh), included by every protected location.
# 1. Shape, by map: header missing, scheme not "bearer", not three base64url parts with a
#    43-character signature. Answers with the precise reason.
if (\$hypeman_auth_pre) {
    add_header WWW-Authenticate Bearer always;
    add_header Cache-Control no-store always;
    return 401 '{"code":"Unauthorized","message":"\$hypeman_auth_pre"}\n';
}
# 2. Signature and claims: nginx/HypemanAuth.pm (perl_set); "" means no valid token and ends
#    in @hypeman_401 (error_page at server level).
if (\$hypeman_jwt_sub = "") {
    return 401;
}
EOF
} | write hypeman-auth.conf

# ---------------------------------------------------------------------------------------------
{
    cat <<EOF
# hypeman API locations (rendered by nginx/render.sh), included by every hypeman server.
# Open: /health, /openapi.yaml. Everything else needs a bearer JWT (hypeman-auth.conf).

default_type application/json;
charset off;
gzip off;
server_tokens off;
client_max_body_size $max_body;

# FastCGI timing: synchronous operations may take minutes; the log stream overrides this.
fastcgi_keep_conn off;
fastcgi_connect_timeout 5s;
fastcgi_send_timeout 300s;
fastcgi_read_timeout 300s;

# nginx's own errors are JSON too, so clients never see an HTML page. These do not touch app
# responses (fastcgi_intercept_errors is off), so the app's JSON errors pass unchanged.
error_page 401 @hypeman_401;
# 400 and 414 can come from the request line itself (a bad escape, NUL, '..' above the root,
# a URI too long), before there is a URI: nginx cannot redirect those to a named location
# ("empty URI in redirect to named location", then a 500 HTML page), so they go to internal URIs.
error_page 400 /.hypeman-error/400;
error_page 404 @hypeman_404;
error_page 405 = \$hypeman_405_page;
error_page 413 @hypeman_413;
error_page 414 /.hypeman-error/414;
# Headers too large (494) and plain HTTP on the TLS port (497): nginx's 400s, as JSON.
error_page 494 497 =400 /.hypeman-error/400;
error_page 500 @hypeman_500;
error_page 502 @hypeman_502;
error_page 503 @hypeman_503;
error_page 504 @hypeman_504;
location @hypeman_401 {
    add_header WWW-Authenticate Bearer always;
    add_header Cache-Control no-store always;
    return 401 '{"code":"Unauthorized","message":"invalid token"}\n';
}
location = /.hypeman-error/400 { internal; return 400 '{"code":"bad_request","message":"malformed request"}\n'; }
location @hypeman_404 { return 404 '{"code":"not_found","message":"resource not found"}\n'; }
# nginx answers 405 itself from static files (/openapi.yaml), which allow GET and HEAD, and
# for TRACE on every path, before choosing a location (\$hypeman_405_page). A TRACE elsewhere
# is handed to the app after the same bearer check as the path's own location would do (the
# app answers 401 without a subject): the app knows the path's methods and answers 405 with
# its Allow, or 404.
location @hypeman_405 {
    add_header Allow "GET, HEAD" always;
    return 405 '{"code":"method_not_allowed","message":"method not allowed; allowed: GET, HEAD"}\n';
}
location @hypeman_trace {
    include $out/hypeman-fastcgi.conf;
    fastcgi_param HTTP_X_AUTH_SUBJECT \$hypeman_jwt_sub;
}
location @hypeman_413 { return 413 '{"code":"payload_too_large","message":"request body too large"}\n'; }
location = /.hypeman-error/414 { internal; return 414 '{"code":"uri_too_long","message":"request URI too long"}\n'; }
location @hypeman_500 { return 500 '{"code":"internal_error","message":"internal error at the edge"}\n'; }
location @hypeman_502 { return 502 '{"code":"unavailable","message":"API workers unavailable"}\n'; }
location @hypeman_503 { return 503 '{"code":"unavailable","message":"service unavailable"}\n'; }
location @hypeman_504 { return 504 '{"code":"timeout","message":"API workers did not answer in time"}\n'; }
EOF
    cat <<EOF

location = /health {
    include $out/hypeman-fastcgi.conf;
    fastcgi_param HTTP_X_AUTH_SUBJECT "";
}

# nginx serves this one itself, so it checks the path itself: only the canonical spelling
# (not /volumes/..%2Fopenapi.yaml, which nginx also resolves to here). The app checks the
# paths of the FastCGI locations (/health included) against DOCUMENT_URI.
location = /openapi.yaml {
    if (\$request_uri !~ "^/openapi\.yaml(\?|\$)") {
        return 400;
    }
    alias $openapi;
    default_type application/yaml;
    types { }
}

# Everything not matched below: authenticated, then the app (unknown paths get its JSON 404).
location / {
    include $out/hypeman-auth.conf;
    include $out/hypeman-fastcgi.conf;
    fastcgi_param HTTP_X_AUTH_SUBJECT \$hypeman_jwt_sub;
}

# Volume uploads carry archives.
location = /volumes {
    client_max_body_size $max_archive;
    include $out/hypeman-auth.conf;
    include $out/hypeman-fastcgi.conf;
    fastcgi_param HTTP_X_AUTH_SUBJECT \$hypeman_jwt_sub;
}
location = /volumes/from-archive {
    client_max_body_size $max_archive;
    include $out/hypeman-auth.conf;
    include $out/hypeman-fastcgi.conf;
    fastcgi_param HTTP_X_AUTH_SUBJECT \$hypeman_jwt_sub;
}

# Exec: a WebSocket (contract section 1.7), which FastCGI cannot carry, so it is proxied to the
# Provisioner's exec gateway after the same bearer check. Upstream 4xx JSON passes through.
location ~ ^/instances/[^/]+/exec\$ {
    include $out/hypeman-auth.conf;
    proxy_pass http://hypeman_exec;
    proxy_http_version 1.1;
    proxy_set_header Upgrade \$http_upgrade;
    proxy_set_header Connection \$hypeman_connection_upgrade;
    proxy_set_header X-Auth-Subject \$hypeman_jwt_sub;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 24h;
    proxy_send_timeout 24h;
}

# Log streams (SSE): unbuffered, never gzipped, and followed streams may stay open for a day.
location ~ ^/instances/[^/]+/logs\$ {
    include $out/hypeman-auth.conf;
    include $out/hypeman-fastcgi.conf;
    fastcgi_param HTTP_X_AUTH_SUBJECT \$hypeman_jwt_sub;
    fastcgi_buffering off;
    fastcgi_read_timeout 24h;
    fastcgi_send_timeout 24h;
    gzip off;
}
EOF
    if [ "$bench" = 1 ]; then
        cat <<EOF

# Benchmark-only locations (HYPEMAN_BENCH=1, loopback listeners only).
include $out/hypeman-bench-locations.conf;
EOF
    fi
} | write hypeman-locations.conf

if [ "$bench" = 1 ]; then
    write hypeman-bench-locations.conf <<EOF
# hypeman benchmark-only locations (rendered by nginx/render.sh with HYPEMAN_BENCH=1, which it
# allows on loopback listeners only). Never include in production: /_bench/noauth/ is the API
# without a token.
# nginx alone.
location = /_bench/static {
    return 200 '{"ok":true}';
}
# A small static file, and the same file behind the bearer check: the auth cost without any
# FastCGI work. (Not "return", which would answer before the bearer check's "if".)
location = /_bench/static-file {
    alias $out/bench-ok.json;
}
location = /_bench/static-auth {
    include $out/hypeman-auth.conf;
    alias $out/bench-ok.json;
}
# The subject the bearer check hands to the app ("-" for a valid token without one).
location = /_bench/subject {
    include $out/hypeman-auth.conf;
    default_type text/plain;
    return 200 \$hypeman_jwt_sub;
}
# The app's tiny /_bench/hello answer, without a token (subject "bench": the app serves
# nothing but /health without a subject).
location = /_bench/hello {
    include $out/hypeman-fastcgi.conf;
    fastcgi_param HTTP_X_AUTH_SUBJECT bench;
}
# The same app answer behind the bearer check.
location = /_bench/hello-auth {
    include $out/hypeman-auth.conf;
    include $out/hypeman-fastcgi-bench.conf;
    fastcgi_param REQUEST_URI /_bench/hello;
    fastcgi_param DOCUMENT_URI /_bench/hello;
    fastcgi_param HTTP_X_AUTH_SUBJECT \$hypeman_jwt_sub;
}
# Real API paths without auth: /_bench/noauth/instances -> /instances, subject "bench".
location /_bench/noauth/ {
    include $out/hypeman-fastcgi-bench.conf;
    fastcgi_param REQUEST_URI \$hypeman_bench_request_uri;
    fastcgi_param DOCUMENT_URI \$hypeman_bench_document_uri;
    fastcgi_param HTTP_X_AUTH_SUBJECT bench;
    client_max_body_size $max_archive;
}
EOF
    # Same parameters, but with REQUEST_URI/DOCUMENT_URI left to the location: FastCGI keeps
    # duplicate parameters and the app would read the first (unstripped) one.
    sed -e "s#^include /etc/nginx/fastcgi_params;#include $out/fastcgi_params_bench;#" \
        "$out/hypeman-fastcgi.conf" | write hypeman-fastcgi-bench.conf
    grep -v -E '^[[:space:]]*fastcgi_param[[:space:]]+(REQUEST_URI|DOCUMENT_URI)[[:space:]]' \
        /etc/nginx/fastcgi_params | write fastcgi_params_bench
    write hypeman-bench-http.conf <<EOF
# hypeman benchmark-only maps (rendered by nginx/render.sh with HYPEMAN_BENCH=1).
# /_bench/noauth/<path> is passed to the app as /<path> (raw form kept).
map \$request_uri \$hypeman_bench_request_uri {
    default \$request_uri;
    "~^/_bench/noauth(?<hypeman_rest>/.*)\$" \$hypeman_rest;
}
map \$uri \$hypeman_bench_document_uri {
    default \$uri;
    "~^/_bench/noauth(?<hypeman_drest>/.*)\$" \$hypeman_drest;
}
EOF
    printf '{"ok":true}' | write bench-ok.json
    chmod 0644 "$out/bench-ok.json"
else
    rm -f "$out/hypeman-fastcgi-bench.conf" "$out/fastcgi_params_bench" "$out/bench-ok.json" \
        "$out/hypeman-bench-locations.conf" "$out/hypeman-bench-http.conf"
fi

# ---------------------------------------------------------------------------------------------
{
    cat <<EOF
# hypeman edge, http context (rendered by nginx/render.sh; do not edit, re-render instead).
# Needs, in the main context: load_module ngx_http_perl_module.so and "env JWT_SECRET;"
# (see hypeman-main.conf).

upstream hypeman_fcgi {
    # One FastCGI worker process per socket. No keepalive: an idle pooled connection pins a
    # libfcgi thread (stack-probe.md section 1, pitfall 12).
EOF
    for ((i = 0; i < workers; i++)); do
        echo "    server unix:$run_dir/fcgi-$i.sock;"
    done
    cat <<EOF
}


# The exec gateway (a Unix socket of the Provisioner) and WebSocket upgrade headers for it.
upstream hypeman_exec {
    server unix:$exec_sock;
}
# Where nginx's own 405s go (hypeman-locations.conf): TRACE to the app, except on the file
# nginx serves itself.
map "\$request_method \$uri" \$hypeman_405_page {
    default @hypeman_405;
    "TRACE /openapi.yaml" @hypeman_405;
    "~^TRACE " @hypeman_trace;
}
map \$http_upgrade \$hypeman_connection_upgrade {
    default upgrade;
    "" close;
}

# First gate of the bearer check, before any Perl: "" = well-formed "Bearer h.p.s", else the
# 401 message. (map string matching is case-insensitive; the regexes are too.)
map \$http_authorization \$hypeman_auth_pre {
    default "invalid authorization header format";
    "" "authorization header required";
    "~*^bearer [A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}\$" "";
    "~*^bearer " "invalid token";
}
EOF
    if [ "$auth_cache" = 1 ]; then auth_sub=subject; else auth_sub=subject_uncached; fi
    cat <<EOF

# The bearer check's second gate (hypeman-auth.conf): HS256 signature and claims, in the
# worker's Perl interpreter; with HYPEMAN_AUTH_CACHE=1 a verified token is remembered per
# worker for at most 30 s and never past its exp.
perl_modules $share_dir/nginx;
perl_require HypemanAuth.pm;
perl_set \$hypeman_jwt_sub HypemanAuth::$auth_sub;
EOF
    if [ "$bench" = 1 ]; then
        cat <<EOF

# Benchmark-only maps (HYPEMAN_BENCH=1).
include $out/hypeman-bench-http.conf;
EOF
    fi
    if [ -n "$http_listen" ]; then
        cat <<EOF

server {
    listen $http_listen;
    server_name _;
    include $out/hypeman-locations.conf;
}
EOF
    fi
    if [ -n "$https_listen" ]; then
        cat <<EOF

server {
    listen $https_listen ssl http2;
    server_name _;
    ssl_certificate $tls_cert;
    ssl_certificate_key $tls_key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;
    ssl_session_cache shared:hypeman_tls:4m;
    ssl_session_timeout 1h;
    include $out/hypeman-locations.conf;
}
EOF
    fi
} | write hypeman-http.conf

# ---------------------------------------------------------------------------------------------
{
    cat <<EOF
# hypeman edge, standalone nginx main config (rendered by nginx/render.sh).
#   JWT_SECRET=... nginx -p $out -c nginx.conf -e $out/error.log
# Stop: nginx -p $out -c nginx.conf -s quit  (or add -g 'daemon off;' to run in the foreground)
load_module /usr/lib/nginx/modules/ngx_http_perl_module.so;
include $out/hypeman-main.conf;
EOF
    # As root, the workers run as this user with the socket group as their group (ignored,
    # with a warning, when nginx does not start as root).
    echo "user $nginx_user $socket_group;"
    cat <<EOF
worker_processes $nginx_workers;
pid $state_dir/nginx.pid;

events {
    worker_connections 4096;
}

http {
    client_body_temp_path $state_dir/tmp/body;
    fastcgi_temp_path $state_dir/tmp/fastcgi;
    proxy_temp_path $state_dir/tmp/proxy;
    scgi_temp_path $state_dir/tmp/scgi;
    uwsgi_temp_path $state_dir/tmp/uwsgi;
EOF
    if [ -n "$access_log" ]; then
        echo "    access_log $access_log;"
    else
        echo "    access_log off;"
    fi
    cat <<EOF
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65s;

    include $out/hypeman-http.conf;
}
EOF
} | write nginx.conf

echo "rendered $out/nginx.conf"
