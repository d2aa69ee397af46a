"""A VMM that hangs: `hung-vmm --api-socket PATH` binds PATH, accepts, never answers, ignores SIGTERM."""
import signal
import socket
import sys
import time

args = sys.argv[1:]
path = args[args.index("--api-socket") + 1]
path = path[len("path="):] if path.startswith("path=") else path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(16)
held = []
while True:
    conn, _ = listener.accept()
    held.append(conn)   # read nothing, answer nothing
    time.sleep(0.01)
