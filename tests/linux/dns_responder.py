#!/usr/bin/python3
"""A tiny DNS server for the net_user scenario: answers A queries for one name.

  dns_responder.py LISTEN_IP NAME ANSWER_IP READY_FILE

Binds LISTEN_IP:53/udp, writes READY_FILE, then answers every query: NAME's A
record with ANSWER_IP, NXDOMAIN for anything else. Each query's name goes to
stdout, so the test can see the guest's question arrive (through libslirp).
"""
import socket
import struct
import sys


def question_name(packet, offset):
    labels = []
    while True:
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels), offset
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(packet[offset:offset + length].decode("ascii", "replace"))
        offset += length


def answer(packet, name, address):
    query_id, flags = struct.unpack("!HH", packet[:4])
    asked, end = question_name(packet, 12)
    qtype, qclass = struct.unpack("!HH", packet[end:end + 4])
    question = packet[12:end + 4]
    found = asked.lower() == name.lower() and qtype == 1 and qclass == 1
    rcode = 0 if asked.lower() == name.lower() else 3  # NXDOMAIN
    header = struct.pack("!HHHHHH", query_id, 0x8400 | (flags & 0x0100) | rcode, 1,
                         1 if found else 0, 0, 0)
    reply = header + question
    if found:
        reply += struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton(address)
    return asked, reply


def main():
    listen_ip, name, address, ready_file = sys.argv[1:5]
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((listen_ip, 53))
    open(ready_file, "w").close()
    while True:
        packet, peer = server.recvfrom(512)
        try:
            asked, reply = answer(packet, name, address)
        except (ValueError, IndexError, struct.error):
            continue
        print("query", asked, flush=True)
        server.sendto(reply, peer)


if __name__ == "__main__":
    main()
