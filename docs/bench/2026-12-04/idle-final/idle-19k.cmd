== idle-19k: loadtest --url ws://127.0.0.1:44993/v1/ws --gateway-pid <gateway> --workers 2 --source-ips 127.0.0.2,127.0.0.3 --duration 5s idle --sockets 19000 --settle 3s  (1.23 1.36 1.51 load)
