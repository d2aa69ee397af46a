#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

exit(TokenCommand.main(CommandLine.arguments))
