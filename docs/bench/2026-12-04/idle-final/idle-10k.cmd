== idle-10k: loadtest --url ws://127.0.0.1:42811/v1/ws --gateway-pid <gateway> --duration 5s idle --sockets 10000 --settle 3s  (0.79 1.30 1.49 load)
