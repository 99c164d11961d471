== idle-19k: loadtest --url ws://127.0.0.1:45515/v1/ws --gateway-pid <gateway> --workers 2 --source-ips 127.0.0.2,127.0.0.3 --duration 5s idle --sockets 19000 --settle 3s  (1.93 1.62 1.29 load)
