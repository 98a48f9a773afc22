#!/bin/sh
# Stand-in for systemctl inside the packaging tests' chroots (installed as
# /usr/bin/systemctl and /bin/systemctl). Records every call, one line of
# arguments each, in /systemctl.log, and answers `is-active` from
# /systemctl.active: exit 0 when it holds "active", else 3 (inactive).
echo "$*" >> /systemctl.log
case " $* " in
    *" is-active "*)
        [ "$(cat /systemctl.active 2>/dev/null)" = active ] && exit 0
        exit 3
        ;;
esac
exit 0
