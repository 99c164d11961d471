== idle-10k: loadtest --url ws://127.0.0.1:40179/v1/ws --gateway-pid <gateway> --duration 5s idle --sockets 10000 --settle 3s  (2.48 1.71 1.31 load)
