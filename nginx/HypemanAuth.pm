# Bearer-token check for the hypeman edge, run inside nginx by ngx_http_perl_module
# (libnginx-mod-http-perl). render.sh loads it with perl_modules/perl_require and binds
#   perl_set $hypeman_jwt_sub HypemanAuth::subject;       (verdicts cached, the default)
#   perl_set $hypeman_jwt_sub HypemanAuth::subject_uncached;
# The variable is the token's `sub`, "-" for a valid token without a subject, and "" when the
# request has no valid token (the location then answers 401).
#
# Rules: scheme "bearer" in any case, one space, then exactly three non-empty base64url parts,
# the last 43 characters long; the header decodes to a JSON object whose alg is exactly "HS256"
# (HS384/HS512/none/RS256... are rejected); the signature is HMAC-SHA256 under the bytes of env
# JWT_SECRET, compared in constant time as canonical base64url text (so a token has exactly one
# valid spelling); the payload is a JSON object; `exp` is required, a number > now; the token's
# lifetime is bounded by env HYPEMAN_MAX_TOKEN_TTL (seconds; render.sh sets it, default 30 days):
# exp - now, and exp - iat when `iat` is present (a number), must not exceed it; `nbf`, when
# present, a number <= now; `sub`, when present, a string without control characters (it
# travels in a header and a FastCGI parameter). An empty JWT_SECRET rejects every token and
# logs why.
#
# Needs libjson-xs-perl (JSON::XS) besides libnginx-mod-http-perl.
#
# Why Perl: the interpreter lives as long as the nginx worker, so a verdict can be kept in a
# plain hash. A hit costs 4-7 us of nginx CPU per request, all included (the perl_set call
# itself is 2-3 us of that), where njs 0.7 cloned its VM per request (about 25 us) and a cached
# auth_request subrequest cost 11-12 us. A miss (a verification) costs about 13 us. Only valid tokens are cached, for at most CACHE_SECONDS and never past
# their exp; the cache is per worker and bounded (CACHE_ENTRIES, tokens up to CACHE_TOKEN_BYTES).
# Everything here is CPU-only work: nothing blocks the worker.
package HypemanAuth;

use strict;
use warnings;

use B ();
use Digest::SHA qw(hmac_sha256);
use JSON::XS ();
use MIME::Base64 qw(decode_base64url encode_base64url);
use Time::HiRes ();

use constant CACHE_SECONDS     => 30;
use constant CACHE_ENTRIES     => 4096;
use constant CACHE_TOKEN_BYTES => 2048;
# When HYPEMAN_MAX_TOKEN_TTL is not in the worker's environment (or not a positive integer).
use constant DEFAULT_MAX_TTL   => 30 * 86400;

# Authorization value => [subject, time until which the verdict holds].
my %verdicts;
my $json = JSON::XS->new->utf8;

# JWT_SECRET is read in the worker on first use: nginx passes it only with "env JWT_SECRET;".
my $secret;
# Longest accepted token lifetime in seconds, read with the secret.
my $max_ttl;

# base64url of the usual HS256 headers, accepted without decoding.
my %hs256_headers = map { encode_base64url($_) => 1 } (
    '{"alg":"HS256","typ":"JWT"}',
    '{"typ":"JWT","alg":"HS256"}',
    '{"alg": "HS256", "typ": "JWT"}',
    '{"typ": "JWT", "alg": "HS256"}',
);

# A JSON object from a base64url segment, or undef.
sub decode_object {
    my ($segment) = @_;
    my $value = eval { $json->decode(decode_base64url($segment)) };
    return ref $value eq 'HASH' ? $value : undef;
}

# JSON::XS gives numbers as numeric scalars and strings as string scalars; tell them apart.
# (An integer too large for a double to hold exactly comes back as a string: such an exp or
# nbf is rejected.)
sub is_number {
    my ($v) = @_;
    return 0 if !defined $v || ref $v;
    my $flags = B::svref_2object(\$v)->FLAGS;
    return ($flags & (B::SVf_IOK | B::SVf_NOK)) && !($flags & B::SVf_POK);
}

sub is_string {
    my ($v) = @_;
    return 0 if !defined $v || ref $v;
    return B::svref_2object(\$v)->FLAGS & B::SVf_POK ? 1 : 0;
}

# Verifies an Authorization value; returns [subject, valid-until] or undef.
sub verify {
    my ($auth, $r) = @_;
    return undef
        unless $auth =~ /\A[Bb][Ee][Aa][Rr][Ee][Rr] (([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+))\.([A-Za-z0-9_-]{43})\z/;
    my ($signed, $header, $payload, $signature) = ($1, $2, $3, $4);

    $secret = $ENV{JWT_SECRET} // '' unless defined $secret;
    unless (defined $max_ttl) {
        my $v = $ENV{HYPEMAN_MAX_TOKEN_TTL} // '';
        $max_ttl = $v =~ /\A[1-9][0-9]{0,11}\z/ ? $v + 0 : DEFAULT_MAX_TTL;
    }
    if ($secret eq '') {
        $r->log_error(0, "hypeman auth: JWT_SECRET is empty in nginx's environment; every token is rejected");
        return undef;
    }

    unless ($hs256_headers{$header}) {
        my $h = decode_object($header);
        return undef unless $h && is_string($h->{alg}) && $h->{alg} eq 'HS256';
    }

    # Constant time over the 43 characters: XOR, then count the non-zero bytes.
    my $diff = encode_base64url(hmac_sha256($signed, $secret)) ^ $signature;
    return undef if ($diff =~ tr/\0//c) != 0;

    my $claims = decode_object($payload) or return undef;
    my $now = Time::HiRes::time();
    my $until = $now + CACHE_SECONDS;
    # exp is required (a token without one would never expire), and bounded: never valid for
    # longer than max_ttl from now, nor issued for longer than max_ttl.
    my $exp = $claims->{exp};
    return undef unless is_number($exp) && $exp > $now && $exp - $now <= $max_ttl;
    if (exists $claims->{iat}) {
        my $iat = $claims->{iat};
        return undef unless is_number($iat) && $exp - $iat <= $max_ttl;
    }
    $until = $exp if $exp < $until;
    if (exists $claims->{nbf}) {
        my $nbf = $claims->{nbf};
        return undef unless is_number($nbf) && $nbf <= $now;
    }
    my $sub = '-';
    if (exists $claims->{sub}) {
        my $s = $claims->{sub};
        return undef unless is_string($s) && $s !~ /[\x00-\x1f\x7f]/;
        if ($s ne '') {
            utf8::encode($s);
            $sub = $s;
        }
    }
    return [$sub, $until];
}

sub subject_uncached {
    my ($r) = @_;
    my $auth = $r->header_in('Authorization');
    return '' unless defined $auth;
    my $verdict = verify($auth, $r) or return '';
    return $verdict->[0];
}

sub subject {
    my ($r) = @_;
    my $auth = $r->header_in('Authorization');
    return '' unless defined $auth;
    my $now = Time::HiRes::time();
    my $verdict = $verdicts{$auth};
    return $verdict->[0] if $verdict && $verdict->[1] > $now;

    $verdict = verify($auth, $r);
    unless ($verdict) {
        delete $verdicts{$auth};
        return '';
    }
    if (length $auth <= CACHE_TOKEN_BYTES) {
        if (keys %verdicts >= CACHE_ENTRIES) {
            delete @verdicts{grep { $verdicts{$_}[1] <= $now } keys %verdicts};
            %verdicts = () if keys %verdicts >= CACHE_ENTRIES;
        }
        $verdicts{$auth} = $verdict;
    }
    return $verdict->[0];
}

1;
