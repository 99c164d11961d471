== idle-10k: loadtest --url ws://127.0.0.1:42883/v1/ws --gateway-pid <gateway> --duration 5s idle --sockets 10000 --settle 3s  (3.41 2.70 2.07 load)
