#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Digest

/// `hypeman-token`: prints an HS256 JWT (`sub`, `iat`, `exp`) signed with the bytes of an
/// environment variable, the same key nginx's HypemanAuth.pm verifies with. Every token has an
/// `exp`, and its lifetime is at most `HYPEMAN_MAX_TOKEN_TTL` (default 30d), the bound nginx
/// enforces.
enum TokenCommand {
    static let usage = """
        usage: hypeman-token [--subject NAME] [--ttl DURATION] [--secret-env VAR]

        Prints a bearer token for the hypeman API: an HS256 JWT with claims sub, iat and exp,
        signed with the bytes of the environment variable VAR (default JWT_SECRET).

          --subject NAME    the token's subject (default: test-user)
          --ttl DURATION    lifetime: seconds (3600) or a number with s, m, h or d
                            (30m, 24h, 7d); default 24h, at most HYPEMAN_MAX_TOKEN_TTL
                            (the longest lifetime nginx accepts; default 30d)
          --secret-env VAR  environment variable holding the HMAC key (default JWT_SECRET)
          -h, --help        this text

        Example: curl -H "Authorization: Bearer $(hypeman-token --subject alice --ttl 1h)" ...
        Exit status: 0 on success, 2 on bad arguments, a --ttl above HYPEMAN_MAX_TOKEN_TTL or
        an empty/missing secret.
        """

    struct Options: Equatable {
        var subject = "test-user"
        var ttlSeconds: Int64 = 24 * 3600
        var secretEnv = "JWT_SECRET"
    }

    enum Parsed: Equatable {
        case help
        case run(Options)
    }

    struct UsageError: Error, Equatable {
        let message: String
    }

    static let maxTTLSeconds: Int64 = 3650 * 86400
    /// nginx's bound when `HYPEMAN_MAX_TOKEN_TTL` is unset (nginx/render.sh has the same default).
    static let defaultMaxTokenTTL: Int64 = 30 * 86400

    /// The longest lifetime nginx accepts: `HYPEMAN_MAX_TOKEN_TTL` (a duration) or 30 days.
    static func maxTokenTTL(_ value: String?) throws -> Int64 {
        guard let value, !value.isEmpty else { return defaultMaxTokenTTL }
        guard let seconds = parseDuration(value) else {
            throw UsageError(message: "HYPEMAN_MAX_TOKEN_TTL '\(value)' is not a duration like 30d (1s to 3650d)")
        }
        return seconds
    }

    /// Runs the command; returns the process exit status.
    static func main(_ arguments: [String]) -> Int32 {
        let parsed: Parsed
        do {
            parsed = try parse(Array(arguments.dropFirst()))
        } catch let error as UsageError {
            fail("\(error.message)\n(see hypeman-token --help)")
            return 2
        } catch {
            fail("\(error)")
            return 2
        }
        switch parsed {
        case .help:
            writeAll(1, usage + "\n")
            return 0
        case .run(let options):
            do {
                let bound = try maxTokenTTL(getenv("HYPEMAN_MAX_TOKEN_TTL").map { String(cString: $0) })
                guard options.ttlSeconds <= bound else {
                    fail("--ttl of \(options.ttlSeconds) s is longer than HYPEMAN_MAX_TOKEN_TTL (\(bound) s): nginx would reject the token")
                    return 2
                }
            } catch let error as UsageError {
                fail(error.message)
                return 2
            } catch {
                fail("\(error)")
                return 2
            }
            guard let secret = environmentBytes(options.secretEnv), !secret.isEmpty else {
                fail("environment variable \(options.secretEnv) is empty or unset; set it to the API's JWT_SECRET")
                return 2
            }
            let now = Int64(time(nil))
            let token = mint(subject: options.subject, issuedAt: now, expiresAt: now + options.ttlSeconds, secret: secret)
            writeAll(1, token + "\n")
            return 0
        }
    }

    static func parse(_ args: [String]) throws -> Parsed {
        var options = Options()
        var i = 0
        func value(_ flag: String, inline: String?) throws -> String {
            if let inline { return inline }
            i += 1
            guard i < args.count else { throw UsageError(message: "\(flag) needs a value") }
            return args[i]
        }
        while i < args.count {
            let arg = args[i]
            var flag = arg
            var inline: String?
            if arg.hasPrefix("--"), let eq = arg.firstIndex(of: "=") {
                flag = String(arg[..<eq])
                inline = String(arg[arg.index(after: eq)...])
            }
            switch flag {
            case "-h", "--help":
                return .help
            case "--subject", "--sub":
                let s = try value(flag, inline: inline)
                guard !s.isEmpty else { throw UsageError(message: "--subject must not be empty") }
                options.subject = s
            case "--ttl":
                let t = try value(flag, inline: inline)
                guard let seconds = parseDuration(t) else {
                    throw UsageError(message: "--ttl '\(t)' is not a duration like 3600, 30m, 24h or 7d (1s to 3650d)")
                }
                options.ttlSeconds = seconds
            case "--secret-env":
                let v = try value(flag, inline: inline)
                guard isEnvName(v) else { throw UsageError(message: "--secret-env '\(v)' is not an environment variable name") }
                options.secretEnv = v
            default:
                throw UsageError(message: "unknown argument '\(arg)'")
            }
            i += 1
        }
        return .run(options)
    }

    /// "3600" (seconds), "45s", "30m", "24h", "7d". Positive, at most `maxTTLSeconds`.
    static func parseDuration(_ text: String) -> Int64? {
        var digits = Substring(text)
        var unit: Int64 = 1
        if let last = text.last, !last.isNumber {
            switch last {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3600
            case "d": unit = 86400
            default: return nil
            }
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.count <= 12, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
              let n = Int64(digits), n > 0 else { return nil }
        let (seconds, overflow) = n.multipliedReportingOverflow(by: unit)
        guard !overflow, seconds <= maxTTLSeconds else { return nil }
        return seconds
    }

    static func isEnvName(_ s: String) -> Bool {
        guard let first = s.utf8.first, !(first >= 48 && first <= 57) else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c == 95
        }
    }

    /// The signed token: base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256).
    static func mint(subject: String, issuedAt: Int64, expiresAt: Int64, secret: [UInt8]) -> String {
        let header = #"{"alg":"HS256","typ":"JWT"}"#
        let claims = #"{"sub":"# + jsonString(subject) + #","iat":\#(issuedAt),"exp":\#(expiresAt)}"#
        let signingInput = Base64URL.encode(Array(header.utf8)) + "." + Base64URL.encode(Array(claims.utf8))
        let mac = Digests.hmacSHA256(key: secret, message: Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(mac)
    }

    /// A JSON string literal (RFC 8259 escaping; non-ASCII passes through as UTF-8).
    static func jsonString(_ s: String) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for c in s.utf8 {
            switch c {
            case UInt8(ascii: "\""): out += [92, 34]
            case UInt8(ascii: "\\"): out += [92, 92]
            case 0x0A: out += [92, UInt8(ascii: "n")]
            case 0x0D: out += [92, UInt8(ascii: "r")]
            case 0x09: out += [92, UInt8(ascii: "t")]
            case 0..<0x20:
                out += Array("\\u00".utf8)
                out += [hex[Int(c >> 4)], hex[Int(c & 15)]]
            default: out.append(c)
            }
        }
        out.append(UInt8(ascii: "\""))
        return String(decoding: out, as: UTF8.self)
    }

    /// The raw bytes of an environment variable (no UTF-8 repair), or nil when unset.
    static func environmentBytes(_ name: String) -> [UInt8]? {
        guard let p = getenv(name) else { return nil }
        return Array(UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
    }

    static func fail(_ message: String) {
        writeAll(2, "hypeman-token: \(message)\n")
    }

    static func writeAll(_ fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { buf in
                write(fd, buf.baseAddress.map { $0 + offset }, buf.count - offset)
            }
            if n < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += n
        }
    }
}
