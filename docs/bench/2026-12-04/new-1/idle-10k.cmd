== idle-10k: loadtest --url ws://127.0.0.1:36509/v1/ws --gateway-pid <gateway> --duration 5s idle --sockets 10000 --settle 3s  (3.16 2.68 2.11 load)
