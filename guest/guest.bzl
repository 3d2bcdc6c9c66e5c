"""guest_elf: builds a freestanding PVH test guest (start.S + lib.S + src)."""

_ASFLAGS = " ".join([
    "-m64",
    "-nostdinc",
    "-ffreestanding",
    "-fno-pie",
    "-fno-asynchronous-unwind-tables",
    "-Wa,--fatal-warnings",
])

_LDFLAGS = " ".join([
    "-m elf_x86_64",
    "-static",
    "-nostdlib",
    "--no-pie",
    "--build-id=none",
    "-z max-page-size=0x1000",
    "-z noexecstack",
])

def guest_elf(name, src, visibility = ["//visibility:public"]):
    """Builds <name>.elf (target :<name>) from start.S, lib.S and src.

    gcc -c assembles each .S (C preprocessor on), ld links them with guest.ld
    (static, no PIE, no build-id, loaded at 1 MiB).
    """
    native.genrule(
        name = name,
        srcs = ["start.S", "lib.S", src, "guest.h", "guest.ld"],
        outs = [name + ".elf"],
        cmd = " ".join([
            "set -e;",
            "t=$$(mktemp -d); trap 'rm -rf \"$$t\"' EXIT;",
            "gcc -c %s -o $$t/start.o $(location start.S);" % _ASFLAGS,
            "gcc -c %s -o $$t/lib.o $(location lib.S);" % _ASFLAGS,
            "gcc -c %s -o $$t/main.o $(location %s);" % (_ASFLAGS, src),
            "ld %s -T $(location guest.ld) -o $@ $$t/start.o $$t/lib.o $$t/main.o" % _LDFLAGS,
        ]),
        visibility = visibility,
    )
