#!/bin/bash
#
# metadata_begin
# recipe: Redmine
# tags: centos7
# revision: 2
# description_ru: Система управления проектами Redmine
# description_en: Redmine project management
# metadata_end
#
echo "installing Redmine"
