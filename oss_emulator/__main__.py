"""Command line entry point: ``python -m oss_emulator``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from .server import make_server

SECRET_ENV = 'OSS_EMULATOR_ACCESS_KEY_SECRET'


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='python -m oss_emulator', description='Local OSS emulator')
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, default=0, help='0 picks a free port')
    ap.add_argument('--data-dir', required=True)
    ap.add_argument('--access-key-id', required=True)
    ap.add_argument('--access-key-secret', default=None,
                    help='the secret; prefer --access-key-secret-file or the environment variable '
                         'OSS_EMULATOR_ACCESS_KEY_SECRET, which ps does not show')
    ap.add_argument('--access-key-secret-file', default=None, help='a file holding the secret')
    ap.add_argument('--faults', default='', help='e.g. 500:0.1,503:0.05,reset:0.02,slow:0.05@2.0,throttle:0.1')
    ap.add_argument('--seed', type=int, default=None, help='seed of the fault RNG')
    ap.add_argument('--quiet', action='store_true', help='print nothing but the listening line')
    ap.add_argument('--verbose', action='store_true', help='log every request to stderr')
    ap.add_argument('--fsync', action='store_true',
                    help='fsync every data and metadata file before it becomes visible (survives a power '
                         'cut; slow). Without it a killed emulator still loses nothing it acknowledged')
    args = ap.parse_args(argv)
    secret = args.access_key_secret
    if secret is None and args.access_key_secret_file:
        with open(args.access_key_secret_file, encoding='utf-8') as f:
            secret = f.read().strip()
    if secret is None:
        secret = os.environ.get(SECRET_ENV)
    if not secret:
        ap.error('give the secret with --access-key-secret-file FILE, the environment variable '
                 f'{SECRET_ENV} or --access-key-secret')

    try:
        srv = make_server(args.host, args.port, args.data_dir, {args.access_key_id: secret},
                          faults=args.faults, seed=args.seed, verbose=args.verbose, quiet=args.quiet,
                          fsync=args.fsync)
    except ValueError as e:
        ap.error(str(e))
    host, port = srv.server_address[:2]
    print('OSS emulator listening on http://%s:%d' % (host, port), flush=True)

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t = threading.Thread(target=srv.serve_forever, kwargs={'poll_interval': 0.2}, daemon=True)
    t.start()
    while not stop.wait(0.5):
        pass
    srv.shutdown()
    srv.server_close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
