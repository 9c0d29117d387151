#!/bin/bash
#
# metadata_begin
# recipe: LAMP
# tags: centos,debian,ubuntu
# revision: 6
# description_ru: LAMP (Linux, Apache, MySQL, PHP)
# description_en: LAMP (Linux, Apache, MySQL, PHP)
# os_family: linux
# metadata_end
#
RNAME=LAMP

set -x

LOG_PIPE=/tmp/log.pipe.$$
mkfifo ${LOG_PIPE}
LOG_FILE=/root/${RNAME}.log
touch ${LOG_FILE}
chmod 600 ${LOG_FILE}

tee < ${LOG_PIPE} ${LOG_FILE} &

exec > ${LOG_PIPE}
exec 2> ${LOG_PIPE}

if [ -f /etc/redhat-release ]; then
    yum -y install httpd mariadb-server php
else
    apt-get -y update && apt-get -y install apache2 mariadb-server php
fi
